//! The seam for git over SSH: `git-receive-pack` / `git-upload-pack` exec
//! requests land here (push-to-deploy wires them up; see issue 13 part 2).

use russh::server::Msg;
use russh::Channel;

use crate::auth::Target;
use crate::manager::Manager;

/// Whether an exec request is git's.
pub fn is_git_command(command: &str) -> bool {
    let program = command.split_whitespace().next().unwrap_or("");
    matches!(program, "git-receive-pack" | "git-upload-pack")
}

pub const NOT_ENABLED: &str = "git over ssh: not enabled yet";

/// Serve git's `command` for `target` on `channel` (its stdin/stdout are
/// git's pack protocol) and end the channel with git's exit status. For
/// now a refusal: the message on the client's stderr, exit status 1.
pub async fn serve(channel: Channel<Msg>, _manager: &Manager, _target: &Target, _command: &str) {
    super::session::refuse(&channel, NOT_ENABLED).await;
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
