//! The seam for git over SSH: `git-receive-pack` / `git-upload-pack` exec
//! requests land here (push-to-deploy wires them up; see issue 13 part 2).

/// Whether an exec request is git's.
pub fn is_git_command(command: &str) -> bool {
    let program = command.split_whitespace().next().unwrap_or("");
    matches!(program, "git-receive-pack" | "git-upload-pack")
}

pub const NOT_ENABLED: &str = "git over ssh: not enabled yet";

/// Serve a git command for `target`; for now a refusal (the message goes
/// to the client's stderr, the exit code is 1).
pub async fn serve(_target: &crate::auth::Target, _command: &str) -> Result<(), String> {
    Err(NOT_ENABLED.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn recognises_git_commands_only() {
        assert!(super::is_git_command("git-receive-pack 'app.git'"));
        assert!(super::is_git_command("git-upload-pack '/app.git'"));
        assert!(!super::is_git_command("git status"));
        assert!(!super::is_git_command("echo git-receive-pack"));
    }
}
