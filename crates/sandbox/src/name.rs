//! Names of sandboxes and images: DNS labels, so they can become hostnames
//! and subdomains later.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {why} (use 1-63 lowercase letters, digits and '-', not starting or ending with '-')")]
pub struct InvalidName {
    pub name: String,
    pub why: &'static str,
}

pub fn validate(name: &str) -> Result<(), InvalidName> {
    let bad = |why| {
        Err(InvalidName {
            name: name.chars().take(80).collect(),
            why,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 63 {
        return bad("it is longer than 63 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return bad("it contains a character other than a-z, 0-9 and '-'");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return bad("it starts or ends with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn dns_labels() {
        for ok in ["a", "dev", "my-box-2", &"x".repeat(63)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Dev",
            "a_b",
            "a.b",
            "ü",
            &"x".repeat(64),
            "a b",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }
}
