//! The egress proxy's CA in the sandbox's trust store. The proxy
//! intercepts HTTPS only to domains with secret header rules; clients in
//! the sandbox must trust its CA for those (the key never leaves the host).

use std::path::Path;

/// Where update-ca-certificates looks for local CAs.
const LOCAL_CA: &str = "/usr/local/share/ca-certificates/ironclaw-egress.crt";
/// The bundles OpenSSL, curl, pip and requests read (Debian, Fedora).
const BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// Install `pem`: its own file, and appended once to each bundle present.
pub fn install(pem: &[u8]) -> std::io::Result<()> {
    let own = Path::new(LOCAL_CA);
    if let Some(dir) = own.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(own, pem)?;
    for bundle in BUNDLES {
        let path = Path::new(bundle);
        let Ok(current) = std::fs::read(path) else {
            continue;
        };
        if current.windows(pem.len()).any(|w| w == pem) {
            continue;
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
        std::io::Write::write_all(&mut f, b"\n")?;
        std::io::Write::write_all(&mut f, pem)?;
    }
    Ok(())
}

/// The certificate a VM's host put on its kernel command line as
/// `ironclaw.ca=BASE64` (the PEM body without its lines), as PEM again.
pub fn pem_from_cmdline(cmdline: &str) -> Option<Vec<u8>> {
    let body = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ironclaw.ca="))
        .filter(|b| !b.is_empty())?;
    if !body
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
    {
        return None;
    }
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).ok()?);
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    Some(pem.into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cmdline_form_round_trips_to_pem() {
        let body = "A".repeat(70);
        let pem = super::pem_from_cmdline(&format!("quiet ironclaw.ca={body} x=1")).unwrap();
        let text = String::from_utf8(pem).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!((lines[1].len(), lines[2].len()), (64, 6));
        assert_eq!(lines[3], "-----END CERTIFICATE-----");
        assert!(super::pem_from_cmdline("ironclaw.ca=a;rm").is_none());
        assert!(super::pem_from_cmdline("quiet").is_none());
    }
}
