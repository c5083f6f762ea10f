//! The device cgroup of cgroup v2: an eBPF program (BPF_PROG_TYPE_CGROUP_DEVICE)
//! attached to the sandbox's group, allowing exactly the nodes in
//! [`crate::cgroup::ALLOWED_DEVICES`], as cgroup v1's `devices.allow` does.
//! The program is a straight list of compares, as runc's device filter is;
//! the kernel keeps it attached until the group is removed.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// `bpf_cgroup_dev_ctx.access_type` low half: 1 block, 2 char.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used below.
const LDX_W: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
const AND32_K: u8 = 0x54;
const JNE_K: u8 = 0x55;
const MOV64_K: u8 = 0xb7;
const EXIT: u8 = 0x95;

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub char_device: bool,
    pub major: u32,
    /// None: every minor.
    pub minor: Option<u32>,
}

/// Parse a `devices.allow` line (`c 1:3 rwm`, `c 136:* rwm`). Access is
/// not narrowed: every rule we write allows read, write and mknod.
pub fn parse_rule(line: &str) -> Option<Rule> {
    let mut it = line.split_whitespace();
    let kind = it.next()?;
    let (major, minor) = it.next()?.split_once(':')?;
    Some(Rule {
        char_device: match kind {
            "c" => true,
            "b" => false,
            _ => return None,
        },
        major: major.parse().ok()?,
        minor: if minor == "*" {
            None
        } else {
            Some(minor.parse().ok()?)
        },
    })
}

/// The program: r2 = type, r4 = major, r5 = minor; each rule falls
/// through to the next on a mismatch, or returns 1 (allow); the end
/// returns 0 (deny).
fn program(rules: &[Rule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules {
        let kind = if r.char_device { DEV_CHAR } else { DEV_BLOCK };
        let checks = if r.minor.is_some() { 3 } else { 2 };
        // Jumps skip the remaining checks and the two allow instructions.
        let mut left = checks;
        let mut jne = |reg: u8, value: i32| {
            left -= 1;
            insn(JNE_K, reg, 0, (left + 2) as i16, value)
        };
        let mut block = vec![jne(2, kind), jne(4, r.major as i32)];
        if let Some(minor) = r.minor {
            block.push(jne(5, minor as i32));
        }
        p.extend(block);
        p.push(insn(MOV64_K, 0, 0, 0, 1));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV64_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<i64> {
    // SAFETY: attr is a properly laid out bpf_attr prefix that outlives
    // the call; the kernel zero-extends the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load the filter for `rules` and attach it to the cgroup v2 directory
/// `group`.
pub fn attach(group: &Path, rules: &[Rule]) -> std::io::Result<()> {
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"ironclaw");
    let load = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: name,
    };
    // SAFETY: a successful BPF_PROG_LOAD returns a new descriptor we own.
    let prog = unsafe { OwnedFd::from_raw_fd(bpf(BPF_PROG_LOAD, &load)? as i32) };
    let dir = std::fs::File::open(group)?;
    bpf(
        BPF_PROG_ATTACH,
        &ProgAttach {
            target_fd: dir.as_raw_fd() as u32,
            attach_bpf_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_DEVICE,
            attach_flags: 0,
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse() {
        assert_eq!(
            parse_rule("c 136:* rwm"),
            Some(Rule {
                char_device: true,
                major: 136,
                minor: None
            })
        );
        assert_eq!(parse_rule("b 7:0 rw").map(|r| r.char_device), Some(false));
        assert_eq!(parse_rule("x 1:2"), None);
        assert_eq!(parse_rule("c 1"), None);
    }

    #[test]
    fn every_jump_lands_on_the_next_rule() {
        let rules = [
            parse_rule("c 1:3 rwm").unwrap(),
            parse_rule("c 136:* rwm").unwrap(),
        ];
        let p = program(&rules);
        // 4 loads, rule 1: 3 checks + 2, rule 2: 2 checks + 2, deny: 2.
        assert_eq!(p.len(), 4 + 5 + 4 + 2);
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JNE_K {
                let target = i as i64 + 1 + ins.off as i64;
                let next_rule = if i < 9 { 9 } else { 13 };
                assert_eq!(target, next_rule, "instruction {i}");
            }
        }
    }
}
