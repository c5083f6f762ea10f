//! Pure formatting and parsing helpers: sizes, ages, tables, `NAME:/path`.

use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

/// A `--mount HOST:GUEST[:ro|:rw]` (read-only unless `:rw`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub host: String,
    pub guest: String,
    pub read_only: bool,
}

/// Parse `--mount HOST:GUEST[:ro|:rw]`. Both paths must be absolute; a
/// path with ':' in it cannot be mounted.
pub fn parse_mount(s: &str) -> Result<MountSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (host, guest, read_only) = match parts.as_slice() {
        [h, g] => (*h, *g, true),
        [h, g, "ro"] => (*h, *g, true),
        [h, g, "rw"] => (*h, *g, false),
        [_, _, m] => return Err(format!("invalid mount '{s}': mode '{m}' must be ro or rw")),
        _ => {
            return Err(format!(
                "invalid mount '{s}': expected HOST:GUEST[:ro|:rw] (paths cannot contain ':')"
            ))
        }
    };
    if !host.starts_with('/') || !guest.starts_with('/') {
        return Err(format!(
            "invalid mount '{s}': HOST and GUEST must be absolute paths"
        ));
    }
    Ok(MountSpec {
        host: host.into(),
        guest: guest.into(),
        read_only,
    })
}

/// Parse a size into MiB: `512M`, `2G`, `1.5G`, `512` (plain numbers are MiB),
/// `1024K`, `1T`; suffixes are case-insensitive and may end in `B` or `iB`
/// (`MB` is taken as MiB). Fractions are rounded to the nearest MiB.
pub fn parse_size_mib(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "invalid size '{s}': expected a number with an optional unit, e.g. 512M or 2G"
        ));
    }
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid size '{s}': '{num}' is not a number"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let factor_mib = match unit {
        "" | "m" => 1.0,
        "k" => 1.0 / 1024.0,
        "g" => 1024.0,
        "t" => 1024.0 * 1024.0,
        other => {
            return Err(format!(
                "invalid size '{s}': unknown unit '{other}' (use K, M, G or T)"
            ))
        }
    };
    let mib = (n * factor_mib).round();
    if mib < 1.0 {
        return Err(format!("invalid size '{s}': must be at least 1 MiB"));
    }
    if mib > u32::MAX as f64 {
        return Err(format!("invalid size '{s}': too large"));
    }
    Ok(mib as u64)
}

/// Human-readable bytes, binary units, short form: `512B`, `12K`, `1.5M`, `2.0G`.
pub fn format_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    let units = ["K", "M", "G", "T", "P"];
    if b < KIB {
        return format!("{bytes}B");
    }
    let mut v = b / KIB;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    let rounded = (v * 10.0).round() / 10.0;
    if v < 10.0 && rounded.fract() > 0.0 {
        format!("{:.1}{}", v, units[i])
    } else {
        format!("{:.0}{}", v, units[i])
    }
}

/// MiB as a short size: `512M`, `2G`, `1.5G`.
pub fn format_mib(mib: u64) -> String {
    format_bytes((mib as f64 * MIB) as u64)
}

/// Age of a duration, docker style: `12s`, `5m`, `3h`, `4d`, `6w`.
pub fn format_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        86_400..=1_209_599 => format!("{}d", s / 86_400),
        _ => format!("{}w", s / 604_800),
    }
}

/// Age of an RFC 3339 timestamp relative to `now`; `-` when missing or unparsable.
pub fn age_since(ts: Option<&str>, now: OffsetDateTime) -> String {
    let Some(t) = ts.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()) else {
        return "-".into();
    };
    let d = now - t;
    if d.is_negative() {
        return "0s".into();
    }
    format_age(d.unsigned_abs())
}

/// A left-aligned text table; columns separated by three spaces, the last
/// column not padded (no trailing whitespace).
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let cols = headers.len();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, cell) in r.iter().enumerate().take(cols) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 < cols {
                l.push_str(c);
                l.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            } else {
                l.push_str(c);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Pretty JSON for `--json` (a typed answer re-serialized as it came).
pub fn print_json<T: serde::Serialize + ?Sized>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("\"{e}\""))
    );
}

/// Is `s` a valid sandbox name (DNS label)?
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A `cp`/`fs` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `-`: stdin or stdout
    Std,
    Local(String),
    Remote {
        sandbox: String,
        path: String,
    },
}

/// Parse `NAME:/path`, `-`, or a local path. A prefix before the first `:` is
/// only a sandbox name when it is a valid DNS label (so `./a:b` and `/x:y`
/// stay local). Remote paths must be absolute.
pub fn parse_location(s: &str) -> Result<Location, String> {
    if s == "-" {
        return Ok(Location::Std);
    }
    if let Some((name, path)) = s.split_once(':') {
        if is_dns_label(name) {
            if path.is_empty() {
                return Err(format!(
                    "'{s}': missing path after '{name}:' (e.g. {name}:/root/)"
                ));
            }
            if !path.starts_with('/') {
                return Err(format!(
                    "'{s}': the path in a sandbox must be absolute (e.g. {name}:/root/{path})"
                ));
            }
            return Ok(Location::Remote {
                sandbox: name.to_string(),
                path: path.to_string(),
            });
        }
    }
    if s.is_empty() {
        return Err("empty path".into());
    }
    Ok(Location::Local(s.to_string()))
}

/// Parse a location that must be remote (`fs` commands).
pub fn parse_remote(s: &str) -> Result<(String, String), String> {
    match parse_location(s)? {
        Location::Remote { sandbox, path } => Ok((sandbox, path)),
        _ => Err(format!("'{s}': expected NAME:/path (e.g. dev:/root)")),
    }
}

/// Last path component of a `/`-separated path, if any.
pub fn base_name(path: &str) -> Option<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|s| !s.is_empty() && *s != "." && *s != "..")
}

/// Join a directory path (with or without trailing `/`) and a file name.
pub fn join_remote(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// `drwxr-xr-x` style listing of a kind + mode.
pub fn format_mode(kind: &str, mode: Option<u32>) -> String {
    let k = match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "file" => '-',
        _ => '?',
    };
    let Some(m) = mode else {
        return format!("{k}?????????");
    };
    let mut s = String::with_capacity(10);
    s.push(k);
    for shift in [6, 3, 0] {
        let b = (m >> shift) & 7;
        s.push(if b & 4 != 0 { 'r' } else { '-' });
        s.push(if b & 2 != 0 { 'w' } else { '-' });
        s.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// A FileStat/entry `mtime` (Unix seconds) as `YYYY-MM-DD HH:MM` UTC.
pub fn format_mtime(secs: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => {
            let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
            t.format(&fmt).unwrap_or_else(|_| "-".into())
        }
        Err(_) => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn mounts() {
        let m = |h: &str, g: &str, ro| MountSpec {
            host: h.into(),
            guest: g.into(),
            read_only: ro,
        };
        assert_eq!(parse_mount("/srv/a:/data"), Ok(m("/srv/a", "/data", true)));
        assert_eq!(
            parse_mount("/srv/a:/data:ro"),
            Ok(m("/srv/a", "/data", true))
        );
        assert_eq!(
            parse_mount("/srv/a:/data:rw"),
            Ok(m("/srv/a", "/data", false))
        );
        for bad in [
            "/srv/a",
            "/srv/a:/data:rx",
            "srv:/data",
            "/srv:data",
            "/a:/b:rw:x",
            "",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size_mib("512M"), Ok(512));
        assert_eq!(parse_size_mib("512m"), Ok(512));
        assert_eq!(parse_size_mib("512MiB"), Ok(512));
        assert_eq!(parse_size_mib("512MB"), Ok(512));
        assert_eq!(parse_size_mib("512"), Ok(512));
        assert_eq!(parse_size_mib("2G"), Ok(2048));
        assert_eq!(parse_size_mib("2GiB"), Ok(2048));
        assert_eq!(parse_size_mib("1.5G"), Ok(1536));
        assert_eq!(parse_size_mib("1T"), Ok(1024 * 1024));
        assert_eq!(parse_size_mib("2048K"), Ok(2));
        assert_eq!(parse_size_mib(" 64 M "), Ok(64));
        assert!(parse_size_mib("").is_err());
        assert!(parse_size_mib("G").is_err());
        assert!(parse_size_mib("0").is_err());
        assert!(parse_size_mib("12X").is_err());
        assert!(parse_size_mib("1.2.3G").is_err());
        assert!(parse_size_mib("-1G").is_err());
        assert!(parse_size_mib("100K").is_err());
    }

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0B");
        assert_eq!(format_bytes(1023), "1023B");
        assert_eq!(format_bytes(1024), "1K");
        assert_eq!(format_bytes(12345), "12K");
        assert_eq!(format_bytes(1536 * 1024), "1.5M");
        assert_eq!(format_mib(512), "512M");
        assert_eq!(format_mib(2048), "2G");
        assert_eq!(format_mib(1536), "1.5G");
    }

    #[test]
    fn ages() {
        let s = Duration::from_secs;
        assert_eq!(format_age(s(0)), "0s");
        assert_eq!(format_age(s(59)), "59s");
        assert_eq!(format_age(s(60)), "1m");
        assert_eq!(format_age(s(3599)), "59m");
        assert_eq!(format_age(s(3600)), "1h");
        assert_eq!(format_age(s(86_400 * 3 + 5)), "3d");
        assert_eq!(format_age(s(86_400 * 30)), "4w");
        let now = datetime!(2026-11-23 18:05:00 UTC);
        assert_eq!(age_since(Some("2026-11-23T18:00:00Z"), now), "5m");
        assert_eq!(age_since(Some("2026-11-23T20:00:00+02:00"), now), "5m");
        assert_eq!(age_since(Some("2026-11-23T19:00:00Z"), now), "0s");
        assert_eq!(age_since(Some("garbage"), now), "-");
        assert_eq!(age_since(None, now), "-");
    }

    #[test]
    fn table() {
        let t = render_table(
            &["NAME", "STATE", "AGE"],
            &[
                vec!["dev".into(), "running".into(), "5m".into()],
                vec!["a-longer-name".into(), "stopped".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME            STATE     AGE\n\
             dev             running   5m\n\
             a-longer-name   stopped\n"
        );
        assert_eq!(render_table(&["A", "B"], &[]), "A   B\n");
    }

    #[test]
    fn locations() {
        assert_eq!(parse_location("-"), Ok(Location::Std));
        assert_eq!(
            parse_location("dev:/root/app.py"),
            Ok(Location::Remote {
                sandbox: "dev".into(),
                path: "/root/app.py".into()
            })
        );
        assert_eq!(
            parse_location("./app.py"),
            Ok(Location::Local("./app.py".into()))
        );
        assert_eq!(parse_location("./a:b"), Ok(Location::Local("./a:b".into())));
        assert_eq!(
            parse_location("/tmp/x:/y"),
            Ok(Location::Local("/tmp/x:/y".into()))
        );
        assert_eq!(
            parse_location("Dev:/x"),
            Ok(Location::Local("Dev:/x".into()))
        );
        assert!(parse_location("dev:").is_err());
        assert!(parse_location("dev:root/app.py").is_err());
        assert!(parse_remote("./x").is_err());
        assert_eq!(parse_remote("my-box:/"), Ok(("my-box".into(), "/".into())));
    }

    #[test]
    fn names_and_paths() {
        assert!(is_dns_label("dev"));
        assert!(is_dns_label("a-1"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label("a-"));
        assert!(!is_dns_label("A"));
        assert!(!is_dns_label(""));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert_eq!(base_name("/root/app.py"), Some("app.py"));
        assert_eq!(base_name("./dir/"), Some("dir"));
        assert_eq!(base_name("/"), None);
        assert_eq!(join_remote("/root/", "a"), "/root/a");
        assert_eq!(join_remote("/root", "a"), "/root/a");
    }

    #[test]
    fn modes() {
        assert_eq!(format_mode("dir", Some(0o755)), "drwxr-xr-x");
        assert_eq!(format_mode("file", Some(0o640)), "-rw-r-----");
        assert_eq!(format_mtime(0), "1970-01-01 00:00");
        assert_eq!(format_mtime(1_795_456_800), "2026-11-23 18:00");
    }
}
