//! The applets and the multicall layer that picks one, BusyBox style.
//!
//! The name is the basename of `argv[0]`: an applet's name or alias runs
//! that applet (`mqtt5_pubsub` is `pubsub`); a multicall name (`iotbox`,
//! `awsapp`) takes the applet from the next argument. `--help`, `--version`
//! and `--install` belong to this layer, seen only under a multicall name.
//! Every applet has the same face: `main(name, args) -> Result<(), Error>`;
//! [`crate::error`] turns the error into one line and an exit code.

pub mod jobs;
pub mod mqtt;
pub mod provision;
pub mod recv;
pub mod send;
pub mod shadow;
pub mod spool;
pub mod status;

use crate::cli;
use crate::daemon;
use crate::error::{self, Error, usage};
use crate::output::say;
use argh::FromArgs;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The version printed by `--version`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Names that take the applet from the next argument.
const MULTICALL_NAMES: &[&str] = &["iotbox", "awsapp"];

/// The symlinks `--install` creates.
const SYMLINKS: &[&str] = &["awsapp", "mqtt5_pubsub"];

/// One applet: its names and its entry point. `run` gets the name it was
/// called by (for argh's usage text) and the arguments after it.
struct Applet {
    name: &'static str,
    aliases: &'static [&'static str],
    run: fn(&str, &[&str]) -> Result<(), Error>,
    help: fn(&str) -> String,
}

const APPLETS: &[Applet] = &[
    Applet {
        name: "pubsub",
        aliases: &["mqtt5_pubsub"],
        run: daemon::main,
        help: help_of::<cli::PubsubArgs>,
    },
    Applet {
        name: "send",
        aliases: &[],
        run: send::main,
        help: help_of::<cli::SendArgs>,
    },
    Applet {
        name: "recv",
        aliases: &[],
        run: recv::main,
        help: help_of::<cli::RecvArgs>,
    },
    Applet {
        name: "spool",
        aliases: &[],
        run: spool::main,
        help: help_of::<cli::SpoolArgs>,
    },
    Applet {
        name: "status",
        aliases: &[],
        run: status::main,
        help: help_of::<cli::StatusArgs>,
    },
    Applet {
        name: "shadow",
        aliases: &[],
        run: shadow::main,
        help: help_of::<cli::ShadowArgs>,
    },
    Applet {
        name: "jobs",
        aliases: &[],
        run: jobs::main,
        help: help_of::<cli::JobsArgs>,
    },
    Applet {
        name: "provision",
        aliases: &[],
        run: provision::main,
        help: help_of::<cli::ProvisionArgs>,
    },
];

/// Picks the applet from `argv[0]`'s basename, or from the first argument when
/// called by a multicall name, and runs it.
pub fn dispatch(argv: &[OsString]) -> Result<(), Error> {
    let name = argv.first().and_then(|a| program_name(a)).unwrap_or("");
    let args: Vec<&str> = argv
        .iter()
        .skip(1)
        .map(|a| {
            a.to_str()
                .ok_or_else(|| usage!("argument {a:?} is not valid UTF-8"))
        })
        .collect::<Result<_, _>>()?;

    if let Some(applet) = find_applet(name) {
        return (applet.run)(name, &args);
    }
    if !MULTICALL_NAMES.contains(&name) {
        return Err(Error::Usage(format!(
            "iotbox: unknown program name {name:?}\n{}",
            usage_all()
        )));
    }
    match args.first().copied() {
        Some("--help" | "-h" | "help") => {
            say(&usage_all());
            Ok(())
        }
        Some("--version" | "-V") => {
            say(&format!("iotbox {VERSION}"));
            Ok(())
        }
        Some("--install") => install_symlinks(args.get(1).map(PathBuf::from)),
        Some(sub) => match find_applet(sub) {
            Some(applet) => (applet.run)(&format!("{name} {}", applet.name), &args[1..]),
            None => Err(Error::Usage(format!(
                "{name}: unknown applet {sub:?}\n{}",
                usage_all()
            ))),
        },
        None => Err(Error::Usage(usage_all())),
    }
}

/// The file name of `argv[0]`, if it is valid UTF-8.
fn program_name(argv0: &OsString) -> Option<&str> {
    Path::new(argv0).file_name()?.to_str()
}

fn find_applet(name: &str) -> Option<&'static Applet> {
    APPLETS
        .iter()
        .find(|a| a.name == name || a.aliases.contains(&name))
}

/// argh's generated usage text for one applet.
fn help_of<T: FromArgs>(command: &str) -> String {
    match T::from_args(&[command], &["--help"]) {
        Err(early) => cli::sample_spelling(&early.output),
        Ok(_) => String::new(),
    }
}

/// The usage of every applet, for `--help` and for unknown names.
fn usage_all() -> String {
    let mut text = format!(
        "iotbox {VERSION}: MQTT 5 to AWS IoT Core over UNIX sockets\n\n\
         Usage: iotbox APPLET [ARGS]   (or call it as mqtt5_pubsub / awsapp)\n\
         \x20      iotbox --install [DIR]   create the awsapp and mqtt5_pubsub symlinks\n\
         \x20      iotbox --help | --version\n"
    );
    for applet in APPLETS {
        text.push('\n');
        text.push_str(&(applet.help)(&format!("iotbox {}", applet.name)));
    }
    text
}

/// `iotbox --install [DIR]`: symlinks `awsapp` and `mqtt5_pubsub` to this
/// binary in DIR (default: the directory the binary is in).
fn install_symlinks(dir: Option<PathBuf>) -> Result<(), Error> {
    let exe = std::env::current_exe()
        .map_err(|e| error::runtime!("cannot find this program's own path: {e}"))?;
    let exe_dir = exe.parent().unwrap_or(Path::new("/")).to_path_buf();
    let dir = dir.unwrap_or_else(|| exe_dir.clone());
    // A relative link survives moving the directory (DESTDIR installs).
    let same_dir = dir
        .canonicalize()
        .ok()
        .is_some_and(|d| exe_dir.canonicalize().ok() == Some(d));
    let target = match exe.file_name() {
        Some(file) if same_dir => PathBuf::from(file),
        _ => exe.clone(),
    };
    for name in SYMLINKS {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(meta) if meta.file_type().is_symlink() => std::fs::remove_file(&link)
                .map_err(|e| error::runtime!("cannot replace {}: {e}", link.display()))?,
            Ok(_) => {
                return Err(error::runtime!(
                    "{} exists and is not a symlink; remove it first (nothing was changed there)",
                    link.display()
                ));
            }
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target, &link)
            .map_err(|e| error::runtime!("cannot create {}: {e}", link.display()))?;
        say(&format!("{} -> {}", link.display(), target.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn names_come_from_the_basename() {
        assert_eq!(
            program_name(&OsString::from("/usr/bin/awsapp")),
            Some("awsapp")
        );
        assert_eq!(program_name(&OsString::from("iotbox")), Some("iotbox"));
        assert_eq!(program_name(&OsString::from("")), None);
        assert_eq!(program_name(&OsString::from_vec(vec![0xff, 0xfe])), None);
    }

    #[test]
    fn aliases_resolve() {
        assert_eq!(find_applet("mqtt5_pubsub").map(|a| a.name), Some("pubsub"));
        assert_eq!(find_applet("send").map(|a| a.name), Some("send"));
        assert!(find_applet("awsapp").is_none());
    }

    #[test]
    fn unknown_names_are_usage_errors() {
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        let err = dispatch(&argv(&["/bin/nosuch"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let err = dispatch(&argv(&["iotbox", "frobnicate"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("pubsub"));
        let err = dispatch(&[OsString::from_vec(vec![0xff])]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn usage_lists_every_applet() {
        let text = usage_all();
        for a in APPLETS {
            assert!(text.contains(&format!("iotbox {}", a.name)), "{text}");
        }
        assert!(text.contains("--client_id"));
    }
}
