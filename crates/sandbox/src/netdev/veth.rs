//! STUB (replaced by helper-h1's module at merge).
pub async fn attach(_pid: i32, _att: &super::NetAttachment) -> Result<(), super::NetdevError> {
    Ok(())
}
