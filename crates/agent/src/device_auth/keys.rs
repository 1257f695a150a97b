//! The authorization service's keys, generated at the edge where they are
//! used: the callout issuer (an account nkey), the service's user and its
//! system-account user. The seeds never leave the box (`device-auth.seeds`,
//! 0600); the public keys go into `device-auth.conf`, which the leaf's
//! config includes.

use std::io::Write;
use std::path::{Path, PathBuf};

use serviceradar_natsconf::jwt::{KeyKind, NKey};
use serviceradar_natsconf::leaf::{DEVICE_AUTH_INCLUDE, DeviceAuthKeys, render_device_auth_conf};

use super::DeviceAuthError;

/// File holding the three seeds beside `nats-leaf.conf`.
pub const SEEDS_FILE: &str = "device-auth.seeds";

/// The service's key pairs. `Debug` shows public keys only.
pub struct ServiceKeys {
    /// Signs the users the callout returns.
    pub issuer: NKey,
    /// The service's user in the leaf's global account.
    pub service: NKey,
    /// The service's system-account user (kicks revoked devices).
    pub system: NKey,
}

impl std::fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceKeys")
            .field("issuer", &self.issuer.public_key())
            .field("service", &self.service.public_key())
            .field("system", &self.system.public_key())
            .finish()
    }
}

impl ServiceKeys {
    /// The public keys, as `device-auth.conf` names them.
    pub fn public(&self) -> DeviceAuthKeys {
        DeviceAuthKeys {
            issuer: self.issuer.public_key(),
            service_user: self.service.public_key(),
            system_user: self.system.public_key(),
        }
    }
}

fn seeds_path(nats_dir: &Path) -> PathBuf {
    nats_dir.join(SEEDS_FILE)
}

/// Loads the keys from `nats_dir`, generating and saving them first when
/// there are none, then (re)writes `device-auth.conf` there. Idempotent:
/// run before the leaf starts (`serviceradar-agent device-auth init`).
pub fn init(nats_dir: &Path) -> Result<ServiceKeys, DeviceAuthError> {
    let keys = match load(nats_dir) {
        Ok(keys) => keys,
        Err(DeviceAuthError::Io(_, e)) if e.kind() == std::io::ErrorKind::NotFound => {
            let keys = ServiceKeys {
                issuer: NKey::generate(KeyKind::Account),
                service: NKey::generate(KeyKind::User),
                system: NKey::generate(KeyKind::User),
            };
            save(nats_dir, &keys)?;
            keys
        }
        Err(e) => return Err(e),
    };
    let conf = render_device_auth_conf(&keys.public()).map_err(DeviceAuthError::Config)?;
    std::fs::write(nats_dir.join(DEVICE_AUTH_INCLUDE), conf)
        .map_err(|e| DeviceAuthError::Io("writing device-auth.conf", e))?;
    Ok(keys)
}

/// Loads the keys saved in `nats_dir`.
pub fn load(nats_dir: &Path) -> Result<ServiceKeys, DeviceAuthError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(seeds_path(nats_dir))
            .map_err(|e| DeviceAuthError::Io("reading device-auth.seeds", e))?,
    );
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let mut next = |kind| {
        let seed = lines.next().ok_or(DeviceAuthError::BadSeeds)?;
        NKey::from_seed_of_kind(seed, kind).map_err(|_| DeviceAuthError::BadSeeds)
    };
    Ok(ServiceKeys {
        issuer: next(KeyKind::Account)?,
        service: next(KeyKind::User)?,
        system: next(KeyKind::User)?,
    })
}

fn save(nats_dir: &Path, keys: &ServiceKeys) -> Result<(), DeviceAuthError> {
    let seed = |k: &NKey| k.seed().map_err(|_| DeviceAuthError::BadSeeds);
    let text = zeroize::Zeroizing::new(format!(
        "{}\n{}\n{}\n",
        seed(&keys.issuer)?.as_str(),
        seed(&keys.service)?.as_str(),
        seed(&keys.system)?.as_str()
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(seeds_path(nats_dir))
        .map_err(|e| DeviceAuthError::Io("creating device-auth.seeds", e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| DeviceAuthError::Io("writing device-auth.seeds", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_generates_once_and_keeps_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let first = init(dir.path()).unwrap();
        let again = init(dir.path()).unwrap();
        assert_eq!(first.public(), again.public());
        let conf = std::fs::read_to_string(dir.path().join(DEVICE_AUTH_INCLUDE)).unwrap();
        assert!(conf.contains(&first.issuer.public_key()));
        assert!(!conf.contains(first.issuer.seed().unwrap().as_str()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SEEDS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let debug = format!("{first:?}");
        assert!(!debug.contains(first.service.seed().unwrap().as_str()));
    }
}
