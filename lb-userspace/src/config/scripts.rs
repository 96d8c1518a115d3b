//! Operator programs (exec checks, notify hooks): who runs them, and whether they are
//! safe to run. keepalived's `script_user` and `enable_script_security`.
//!
//! The daemon runs as root with every capability; a program it starts inherits that
//! unless told otherwise. `scripts.user` / `scripts.group` (and an exec check's own
//! `user` / `group`) run them as someone else. And whoever runs them, a program (or a
//! directory on its path, or the config file) that someone other than root, the
//! daemon's user or the program's own user can modify would let that someone run code
//! as root: such a config is refused.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

/// Who runs a program: a user (its primary group unless `group` says) or nobody in
/// particular (the daemon's own user, root).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Resolved credentials to switch to before `exec`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `self`, with what it leaves unset taken from `default`.
    pub fn or(&self, default: &RunAs) -> RunAs {
        RunAs {
            user: self.user.clone().or_else(|| default.user.clone()),
            group: self.group.clone().or_else(|| default.group.clone()),
        }
    }

    /// The uid and gid to run as; `None` when neither is set (the daemon's own). A
    /// group alone keeps the daemon's user.
    pub fn resolve(&self) -> Result<Option<Credentials>, RunAsError> {
        let user = match &self.user {
            Some(name) => Some(
                User::from_name(name)
                    .map_err(|e| RunAsError::Lookup(name.clone(), e))?
                    .ok_or_else(|| RunAsError::NoUser(name.clone()))?,
            ),
            None => None,
        };
        let gid = match &self.group {
            Some(name) => Some(
                Group::from_name(name)
                    .map_err(|e| RunAsError::Lookup(name.clone(), e))?
                    .ok_or_else(|| RunAsError::NoGroup(name.clone()))?
                    .gid,
            ),
            None => user.as_ref().map(|u| u.gid),
        };
        Ok(match (user, gid) {
            (None, None) => None,
            (user, gid) => Some(Credentials {
                uid: user.map_or_else(Uid::effective, |u| u.uid).as_raw(),
                gid: gid.unwrap_or_else(Gid::effective).as_raw(),
            }),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunAsError {
    #[error("no such user {0:?}")]
    NoUser(String),
    #[error("no such group {0:?}")]
    NoGroup(String),
    #[error("looking up {0:?}: {1}")]
    Lookup(String, nix::Error),
}

/// Why `program` (argv[0] of an exec check or hook, run as `runs_as`) is not safe to
/// run, if it is not. A program that does not exist (yet) is not refused here: its
/// directories are still checked, and starting it fails visibly at run time.
pub fn program_problem(program: &str, runs_as: Option<Credentials>) -> Option<String> {
    let path = locate(program)?;
    let allowed = allowed_owners(runs_as);
    match path.canonicalize() {
        Ok(real) => unsafe_component(&real, &allowed),
        // Not there: whoever can create it in its directory could run code.
        Err(_) => path
            .parent()
            .and_then(|dir| unsafe_component(dir, &allowed)),
    }
}

/// Why the config file at `path` is not safe to act on, if it is not: whoever can
/// write it can make the daemon run any program as root.
pub fn config_file_problem(path: &Path) -> Option<String> {
    let real = path.canonicalize().ok()?;
    unsafe_component(&real, &allowed_owners(None))
}

/// The program's path: as given when it names a directory, else the first match on
/// `PATH` (as `exec` would find it); `None` if it is on no `PATH` directory.
fn locate(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.exists())
}

/// Root, the daemon's user and the program's own user may own what it runs.
fn allowed_owners(runs_as: Option<Credentials>) -> Vec<u32> {
    let mut owners = vec![0, Uid::effective().as_raw()];
    owners.extend(runs_as.map(|c| c.uid));
    owners
}

/// The first of `path` and its ancestors that someone else could modify, described.
fn unsafe_component(path: &Path, allowed: &[u32]) -> Option<String> {
    path.ancestors().find_map(|p| {
        let meta = std::fs::metadata(p).ok()?;
        let mode = meta.mode();
        let dir = meta.is_dir();
        // A sticky directory (like /tmp) lets nobody replace what others own in it.
        let sticky = dir && mode & 0o1000 != 0;
        let what = if dir { "directory" } else { "file" };
        if !allowed.contains(&meta.uid()) {
            Some(format!(
                "{} ({what}) is owned by uid {}",
                p.display(),
                meta.uid()
            ))
        } else if mode & 0o002 != 0 && !sticky {
            Some(format!("{} ({what}) is writable by everyone", p.display()))
        } else if mode & 0o020 != 0 && meta.gid() != 0 && !sticky {
            Some(format!(
                "{} ({what}) is writable by group {}",
                p.display(),
                meta.gid()
            ))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xlb-scripts-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    #[test]
    fn programs_others_can_modify_are_refused() {
        let dir = temp_dir("mod");
        let script = dir.join("check");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = script.to_str().unwrap();
        assert_eq!(program_problem(name, None), None);
        assert_eq!(program_problem("/bin/sh", None), None);
        assert_eq!(program_problem("sh", None), None, "found on PATH");

        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o757)).unwrap();
        let why = program_problem(name, None).unwrap();
        assert!(
            why.ends_with("check (file) is writable by everyone"),
            "{why}"
        );

        // The directory counts too: whoever can write it can replace the program...
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = program_problem(name, None).unwrap();
        assert!(why.contains("(directory) is writable by everyone"), "{why}");
        // ...also while the program does not exist yet.
        let missing = dir.join("not-yet");
        assert!(program_problem(missing.to_str().unwrap(), None).is_some());
        // A sticky directory (like /tmp) does not.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(program_problem(name, None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_world_writable_config_file_is_refused() {
        let dir = temp_dir("cfg");
        let file = dir.join("xlb.json");
        std::fs::write(&file, "{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(config_file_problem(&file), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        let why = config_file_problem(&file).unwrap();
        assert!(
            why.ends_with("xlb.json (file) is writable by everyone"),
            "{why}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn users_and_groups_resolve_or_are_named() {
        assert_eq!(RunAs::default().resolve().unwrap(), None);
        let root = RunAs {
            user: Some("root".into()),
            group: None,
        };
        assert_eq!(
            root.resolve().unwrap(),
            Some(Credentials { uid: 0, gid: 0 })
        );
        let nobody = RunAs {
            user: Some("no-such-user-xlb".into()),
            group: None,
        };
        assert_eq!(
            nobody.resolve().unwrap_err().to_string(),
            "no such user \"no-such-user-xlb\""
        );
        let over = RunAs {
            user: None,
            group: Some("root".into()),
        };
        assert_eq!(over.or(&root).user.as_deref(), Some("root"));
    }
}
