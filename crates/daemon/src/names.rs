//! Names users give to things (tasks, channels): DNS labels, so they are
//! safe in URLs, shell commands and host names.

use crate::error::ApiError;

/// `name` as a DNS label (1-63 of a-z, 0-9 and '-', not starting or
/// ending with '-'), else an `invalid_name` error naming `what`.
pub fn check_label(what: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidName(format!(
            "invalid {what} name {name:?}: use 1-63 lower-case letters, digits and '-'"
        )))
    }
}
