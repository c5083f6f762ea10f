//! Just enough ELF parsing to tell a static executable from a dynamic one.
//!
//! The guest agent runs as PID 1 inside images that may not carry a libc (the
//! busybox image has none), so it must not need a program interpreter.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::ImageError;

const PT_INTERP: u32 = 3;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// Fails unless `path` is an ELF executable without a `PT_INTERP` program
/// header. Static PIE (what `-C target-feature=+crt-static` produces) counts
/// as static: it has a dynamic section but no interpreter.
pub fn check_static_elf(path: &Path) -> Result<(), ImageError> {
    let not_static = |reason: String| ImageError::NotStaticElf {
        path: path.to_path_buf(),
        reason,
    };
    let file =
        File::open(path).map_err(|e| ImageError::io(format!("opening {}", path.display()), e))?;
    let meta = file
        .metadata()
        .map_err(|e| ImageError::io(format!("reading {}", path.display()), e))?;
    if !meta.is_file() {
        return Err(not_static("it is not a regular file".into()));
    }
    let mut ehdr = [0u8; 64];
    let n = read_at_most(&file, &mut ehdr, 0)
        .map_err(|e| ImageError::io(format!("reading {}", path.display()), e))?;
    if n < 52 || &ehdr[..4] != b"\x7fELF" {
        return Err(not_static("it is not an ELF file".into()));
    }
    let r = Reader {
        big_endian: ehdr[5] == 2,
    };
    let is64 = match ehdr[4] {
        1 => false,
        2 if n == 64 => true,
        _ => return Err(not_static("unknown ELF class".into())),
    };
    let e_type = r.u16(&ehdr[16..]);
    if e_type != ET_EXEC && e_type != ET_DYN {
        return Err(not_static(format!(
            "ELF type {e_type} is not an executable"
        )));
    }
    let (phoff, phentsize, phnum) = if is64 {
        (
            r.u64(&ehdr[32..]),
            r.u16(&ehdr[54..]) as u64,
            r.u16(&ehdr[56..]) as u64,
        )
    } else {
        (
            r.u32(&ehdr[28..]) as u64,
            r.u16(&ehdr[42..]) as u64,
            r.u16(&ehdr[44..]) as u64,
        )
    };
    let min_entsize = if is64 { 56 } else { 32 };
    if phnum == 0 || phentsize < min_entsize {
        return Err(not_static("it has no program headers".into()));
    }
    let mut ph = vec![0u8; phentsize as usize];
    for i in 0..phnum {
        let off = phoff.saturating_add(i.saturating_mul(phentsize));
        file.read_exact_at(&mut ph, off)
            .map_err(|_| not_static("its program headers are truncated".into()))?;
        if r.u32(&ph) != PT_INTERP {
            continue;
        }
        let (p_offset, p_filesz) = if is64 {
            (r.u64(&ph[8..]), r.u64(&ph[32..]))
        } else {
            (r.u32(&ph[4..]) as u64, r.u32(&ph[16..]) as u64)
        };
        // The interpreter name makes the error actionable ("needs ld-linux").
        let mut interp = vec![0u8; p_filesz.min(256) as usize];
        let interp = match file.read_exact_at(&mut interp, p_offset) {
            Ok(()) => String::from_utf8_lossy(&interp)
                .trim_end_matches('\0')
                .to_string(),
            Err(_) => "?".into(),
        };
        return Err(not_static(format!(
            "it is dynamically linked (interpreter {interp}); build it with RUSTFLAGS='-C target-feature=+crt-static'"
        )));
    }
    Ok(())
}

fn read_at_most(file: &File, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

struct Reader {
    big_endian: bool,
}

impl Reader {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.big_endian {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        }
    }
    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    }
    fn u64(&self, b: &[u8]) -> u64 {
        let a = [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]];
        if self.big_endian {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        }
    }
}
