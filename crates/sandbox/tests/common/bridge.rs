//! A throwaway host bridge for the VM network tests.

use std::net::Ipv4Addr;
use std::process::Command;

pub fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A bridge with the gateway address on a /24 nobody on this host uses;
/// deleted on drop (which also detaches any port still on it).
pub struct Bridge {
    pub name: String,
    pub gateway: Ipv4Addr,
}

impl Bridge {
    pub fn create() -> Bridge {
        let used = ip(&["-4", "route", "show", "table", "all"]).unwrap();
        let third = loop {
            let x = 100 + rand::random::<u8>() % 150;
            if !used.contains(&format!("10.214.{x}.")) {
                break x;
            }
        };
        let b = Bridge {
            name: format!("ictb{}", rand::random::<u32>() % 1_000_000),
            gateway: Ipv4Addr::new(10, 214, third, 1),
        };
        ip(&["link", "add", &b.name, "type", "bridge"]).unwrap();
        ip(&["addr", "add", &format!("{}/24", b.gateway), "dev", &b.name]).unwrap();
        ip(&["link", "set", &b.name, "up"]).unwrap();
        b
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.name]);
    }
}
