//! The read commands: ask the running daemon over its control socket; without one,
//! read what the pinned maps hold.

use anyhow::{Context as _, Result};
use lb_userspace::edges::control::{self, views, Request};

/// How long a read command waits for the daemon.
pub(crate) const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// A reload re-applies every service: allow for big configs.
pub(crate) const RELOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `xlb status|services|backends`: ask the daemon; without one, read the pins.
pub(crate) fn show(pin_dir: &std::path::Path, request: Request, as_json: bool) -> Result<()> {
    let path = control::socket_path(pin_dir);
    let data = match control::request(&path, request, READ_TIMEOUT) {
        Ok(data) => data,
        Err(control::ClientError::NotRunning { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            anyhow::bail!(
                "permission denied on {}: the control socket is root-only (run as root)",
                path.display()
            )
        }
        Err(control::ClientError::NotRunning { .. }) => {
            return show_pinned(pin_dir, request, as_json)
        }
        Err(e) => return Err(e.into()),
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&data)?);
        return Ok(());
    }
    let text = match request {
        Request::Status => views::status_text(&serde_json::from_value(data)?),
        Request::Services => views::services_table(&serde_json::from_value::<Vec<_>>(data)?),
        Request::Backends => views::backends_table(&serde_json::from_value::<Vec<_>>(data)?),
        Request::Vrrp => views::vrrp_table(&serde_json::from_value::<Vec<_>>(data)?),
        Request::Reload | Request::Metrics => unreachable!("not a table command"),
    };
    print!("{text}");
    Ok(())
}

/// The read commands' fallback while no daemon runs: counters from the pinned maps.
fn show_pinned(pin_dir: &std::path::Path, request: Request, as_json: bool) -> Result<()> {
    if request == Request::Vrrp {
        anyhow::bail!(
            "no daemon answers on {}: VRRP state lives in the daemon only",
            control::socket_path(pin_dir).display()
        );
    }
    let pinned = views::from_pins(pin_dir);
    if request == Request::Status {
        let attached = pinned.is_ok();
        if as_json {
            let v = serde_json::json!({"running": false, "pinned_data_plane": attached});
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else if attached {
            println!(
                "xlb daemon not running; the data plane pinned in {} keeps forwarding \
                 (no health checks until a daemon adopts it)",
                pin_dir.display()
            );
        } else {
            println!(
                "xlb is not running (nothing pinned in {})",
                pin_dir.display()
            );
        }
        return Ok(());
    }
    let (services, backends) = pinned.with_context(|| {
        format!(
            "no daemon answers on {} and no data plane is pinned in {}",
            control::socket_path(pin_dir).display(),
            pin_dir.display()
        )
    })?;
    if !as_json {
        eprintln!("(daemon not running: counters from the pinned maps, no health)");
    }
    match (request, as_json) {
        (Request::Services, true) => println!("{}", serde_json::to_string_pretty(&services)?),
        (Request::Services, false) => print!("{}", views::services_table(&services)),
        (_, true) => println!("{}", serde_json::to_string_pretty(&backends)?),
        (_, false) => print!("{}", views::backends_table(&backends)),
    }
    Ok(())
}
