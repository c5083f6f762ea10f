//! `ironclaw fs ls|stat|mkdir|rm|mv NAME:/path`.

use anyhow::Result;
use ironclaw_api as api;
use reqwest::Method;

use crate::args::FsCmd;
use crate::client::{usage, Client};
use crate::commands::sandbox;
use crate::output::{
    format_bytes, format_mode, format_mtime, parse_location, parse_remote, print_json,
    render_table, Location,
};

pub async fn run(c: &Client, cmd: FsCmd) -> Result<i32> {
    match cmd {
        FsCmd::Ls { target, json } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            let list = c.list_dir(&name, &path).await?;
            if json.json {
                print_json(&list);
            } else {
                print!("{}", entries_table(&list.entries));
            }
            Ok(0)
        }
        FsCmd::Stat { target, json } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            let st = c.stat(&name, &path).await?;
            if json.json {
                print_json(&st);
            } else {
                let e = api::DirEntry {
                    name: st.path,
                    kind: st.kind,
                    size: st.size,
                    mode: st.mode,
                    mtime: st.mtime,
                };
                print!("{}", entries_table(&[e]));
            }
            Ok(0)
        }
        FsCmd::Mkdir { target, parents } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            c.call_empty(
                Method::POST,
                &format!("{}/fs/mkdir", sandbox::path(&name)),
                Some(&api::Mkdir {
                    path: path.clone(),
                    parents,
                }),
                &format!("{name}:{path}"),
            )
            .await?;
            Ok(0)
        }
        FsCmd::Rm { target, recursive } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            c.call_empty(
                Method::POST,
                &format!("{}/fs/remove", sandbox::path(&name)),
                Some(&api::Remove {
                    path: path.clone(),
                    recursive,
                }),
                &format!("{name}:{path}"),
            )
            .await?;
            Ok(0)
        }
        FsCmd::Mv { from, to } => {
            let (name, from_path) = parse_remote(&from).map_err(usage)?;
            let to_path = match parse_location(&to).map_err(usage)? {
                Location::Remote { sandbox, path } if sandbox == name => path,
                Location::Remote { .. } => {
                    return Err(usage(
                        "fs mv works within one sandbox; use cp to move between them",
                    ))
                }
                Location::Local(p) if p.starts_with('/') => p,
                _ => {
                    return Err(usage(format!(
                        "'{to}': expected {name}:/path or an absolute path"
                    )))
                }
            };
            c.call_empty(
                Method::POST,
                &format!("{}/fs/rename", sandbox::path(&name)),
                Some(&api::Rename {
                    from: from_path.clone(),
                    to: to_path,
                }),
                &format!("{name}:{from_path}"),
            )
            .await?;
            Ok(0)
        }
    }
}

pub fn entries_table(entries: &[api::DirEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut name = e.name.clone();
            if e.kind == api::FileKind::Dir {
                name.push('/');
            }
            vec![
                format_mode(e.kind.as_str(), Some(e.mode & 0o7777)),
                format_bytes(e.size),
                format_mtime(e.mtime),
                name,
            ]
        })
        .collect();
    render_table(&["MODE", "SIZE", "MODIFIED", "NAME"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let e = |v| serde_json::from_value::<api::DirEntry>(v).unwrap();
        let t = entries_table(&[
            e(serde_json::json!({"name":"app.py","kind":"file","size":2048,"mode":420,"mtime":0})),
            e(
                serde_json::json!({"name":"src","kind":"dir","size":4096,"mode":0o40755,"mtime":1_795_456_800}),
            ),
        ]);
        assert_eq!(
            t,
            "MODE         SIZE   MODIFIED           NAME\n\
             -rw-r--r--   2K     1970-01-01 00:00   app.py\n\
             drwxr-xr-x   4K     2026-11-23 18:00   src/\n"
        );
    }
}
