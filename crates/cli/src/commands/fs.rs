//! `ironclaw fs ls|stat|mkdir|rm|mv NAME:/path`.

use anyhow::Result;
use serde_json::{json, Value};

use crate::args::FsCmd;
use crate::client::{query_string, usage, Client};
use crate::commands::sandbox;
use crate::output::{
    format_bytes, format_mode, format_mtime, mode_bits, parse_location, parse_remote, print_json,
    render_table, Location,
};

pub async fn run(c: &Client, cmd: FsCmd) -> Result<i32> {
    match cmd {
        FsCmd::Ls { target, json } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            let v = c
                .get(
                    &format!(
                        "{}/fs/list?{}",
                        sandbox::path(&name),
                        query_string(&[("path", path.clone())])
                    ),
                    &format!("{name}:{path}"),
                )
                .await?;
            if json.json {
                print_json(&v);
            } else {
                let empty = vec![];
                let entries = v.get("entries").and_then(Value::as_array).unwrap_or(&empty);
                print!("{}", entries_table(entries));
            }
            Ok(0)
        }
        FsCmd::Stat { target, json } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            let v = c
                .get(
                    &format!(
                        "{}/fs/stat?{}",
                        sandbox::path(&name),
                        query_string(&[("path", path.clone())])
                    ),
                    &format!("{name}:{path}"),
                )
                .await?;
            if json.json {
                print_json(&v);
            } else {
                let mut e = v.clone();
                e["name"] = v.get("path").cloned().unwrap_or(json!(path));
                print!("{}", entries_table(&[e]));
            }
            Ok(0)
        }
        FsCmd::Mkdir { target, parents } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            c.post(
                &format!("{}/fs/mkdir", sandbox::path(&name)),
                &json!({"path": path, "parents": parents}),
                &format!("{name}:{path}"),
            )
            .await?;
            Ok(0)
        }
        FsCmd::Rm { target, recursive } => {
            let (name, path) = parse_remote(&target).map_err(usage)?;
            c.post(
                &format!("{}/fs/remove", sandbox::path(&name)),
                &json!({"path": path, "recursive": recursive}),
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
            c.post(
                &format!("{}/fs/rename", sandbox::path(&name)),
                &json!({"from": from_path, "to": to_path}),
                &format!("{name}:{from_path}"),
            )
            .await?;
            Ok(0)
        }
    }
}

pub fn entries_table(entries: &[Value]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let kind = e.get("kind").and_then(Value::as_str).unwrap_or("other");
            let mut name = e
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            if kind == "dir" {
                name.push('/');
            }
            vec![
                format_mode(kind, e.get("mode").and_then(mode_bits)),
                e.get("size")
                    .and_then(Value::as_u64)
                    .map_or_else(|| "-".into(), format_bytes),
                e.get("mtime").map_or_else(|| "-".into(), format_mtime),
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
        let t = entries_table(&[
            json!({"name":"app.py","kind":"file","size":2048,"mode":420,"mtime":0}),
            json!({"name":"src","kind":"dir","size":4096,"mode":"755","mtime":"2026-11-23T18:00:00Z"}),
        ]);
        assert_eq!(
            t,
            "MODE         SIZE   MODIFIED           NAME\n\
             -rw-r--r--   2K     1970-01-01 00:00   app.py\n\
             drwxr-xr-x   4K     2026-11-23 18:00   src/\n"
        );
    }
}
