//! Mapping of OS errors onto the protocol's [`ErrorKind`], so the host can
//! pick an HTTP status without parsing messages.

use ironclaw_proto::ErrorKind;

pub fn kind_of(e: &std::io::Error) -> ErrorKind {
    if let Some(errno) = e.raw_os_error() {
        return match errno {
            libc::ENOENT => ErrorKind::NotFound,
            libc::EEXIST => ErrorKind::AlreadyExists,
            libc::EACCES | libc::EPERM | libc::EROFS => ErrorKind::PermissionDenied,
            libc::ENOTDIR => ErrorKind::NotADirectory,
            libc::EISDIR => ErrorKind::IsADirectory,
            libc::ENOTEMPTY => ErrorKind::DirectoryNotEmpty,
            libc::ENOSPC
            | libc::EDQUOT
            | libc::ENOMEM
            | libc::EMFILE
            | libc::ENFILE
            | libc::EAGAIN => ErrorKind::ResourceExhausted,
            libc::EINVAL | libc::ENAMETOOLONG | libc::ELOOP | libc::EXDEV | libc::E2BIG => {
                ErrorKind::InvalidInput
            }
            libc::ENOSYS | libc::EOPNOTSUPP | libc::ENXIO | libc::ENODEV => ErrorKind::Unsupported,
            libc::EBUSY | libc::ETXTBSY => ErrorKind::Busy,
            libc::EFBIG | libc::EMLINK => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Other,
        };
    }
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => ErrorKind::NotFound,
        K::AlreadyExists => ErrorKind::AlreadyExists,
        K::PermissionDenied => ErrorKind::PermissionDenied,
        K::InvalidInput | K::InvalidData => ErrorKind::InvalidInput,
        K::Unsupported => ErrorKind::Unsupported,
        K::OutOfMemory => ErrorKind::ResourceExhausted,
        _ => ErrorKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        let e = |n| std::io::Error::from_raw_os_error(n);
        assert_eq!(kind_of(&e(libc::ENOENT)), ErrorKind::NotFound);
        assert_eq!(kind_of(&e(libc::EEXIST)), ErrorKind::AlreadyExists);
        assert_eq!(kind_of(&e(libc::EPERM)), ErrorKind::PermissionDenied);
        assert_eq!(kind_of(&e(libc::ENOTDIR)), ErrorKind::NotADirectory);
        assert_eq!(kind_of(&e(libc::EISDIR)), ErrorKind::IsADirectory);
        assert_eq!(kind_of(&e(libc::ENOTEMPTY)), ErrorKind::DirectoryNotEmpty);
        assert_eq!(kind_of(&e(libc::EDQUOT)), ErrorKind::ResourceExhausted);
        assert_eq!(kind_of(&e(libc::EINVAL)), ErrorKind::InvalidInput);
        assert_eq!(kind_of(&e(libc::EBUSY)), ErrorKind::Busy);
        assert_eq!(kind_of(&e(libc::ETXTBSY)), ErrorKind::Busy);
        assert_eq!(kind_of(&e(libc::EFBIG)), ErrorKind::ResourceExhausted);
        assert_eq!(kind_of(&e(libc::ENODEV)), ErrorKind::Unsupported);
        assert_eq!(
            kind_of(&std::io::Error::new(std::io::ErrorKind::InvalidInput, "x")),
            ErrorKind::InvalidInput
        );
    }
}
