//! Finding a pod volume's data on the node. The kubelet lays volumes out as
//!
//! ```text
//! <root>/pods/<pod-uid>/volumes/<plugin>/<dir>          emptyDir, in-tree plugins
//! <root>/pods/<pod-uid>/volumes/kubernetes.io~csi/<dir>/mount   (vol_data.json beside it)
//! <root>/pods/<pod-uid>/volumeDevices/<plugin>/<dir>    block-mode PVCs: not a file tree
//! <root>/pods/<pod-uid>/volume-subpaths/...             bind mounts of subdirectories: never walked
//! ```
//!
//! where `<dir>` is the bound PV's name for a PVC and the pod's volume name otherwise, and
//! `<plugin>` is any plugin (the lookup does not depend on its name). A volume other than an
//! emptyDir must be a mount point: if mount propagation is broken the directory is there but
//! empty, and backing it up would record an empty "latest" snapshot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::pod::{PodVolume, Source};

/// Why a volume is not backed up this time (a Warning Event names it).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    /// No directory for it under the pod.
    #[error(
        "volume {volume:?} has no directory {dir:?} under {pod_dir} (not set up yet, or --kubelet-root is wrong)"
    )]
    NotFound {
        /// The volume.
        volume: String,
        /// The directory name looked for.
        dir: String,
        /// The pod's directory.
        pod_dir: PathBuf,
    },
    /// More than one plugin directory holds it.
    #[error("volume {volume:?} is found more than once: {}", .paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Ambiguous {
        /// The volume.
        volume: String,
        /// Where.
        paths: Vec<PathBuf>,
    },
    /// A block-mode PVC.
    #[error(
        "volume {volume:?} is a block device (volumeMode: Block), not a file system: file-level backup cannot read it"
    )]
    Block {
        /// The volume.
        volume: String,
    },
    /// Not a mount point.
    #[error("volume {volume:?} at {} is not a mount point: the agent does not see the kubelet's mounts (mount the kubelet root with mountPropagation: HostToContainer), so nothing was backed up rather than an empty volume", path.display())]
    NotMounted {
        /// The volume.
        volume: String,
        /// Where.
        path: PathBuf,
    },
}

/// The mount points this process sees, from `/proc/self/mountinfo`.
pub struct Mounts(HashSet<PathBuf>);

impl Mounts {
    /// Reads the current mount table.
    pub fn read() -> std::io::Result<Mounts> {
        Ok(Mounts::parse(&std::fs::read_to_string(
            "/proc/self/mountinfo",
        )?))
    }

    /// Parses mountinfo text: the fifth field of each line, octal escapes undone.
    pub fn parse(text: &str) -> Mounts {
        Mounts(
            text.lines()
                .filter_map(|l| l.split(' ').nth(4))
                .map(|p| PathBuf::from(unescape(p)))
                .collect(),
        )
    }

    /// Whether `path` is a mount point.
    pub fn contains(&self, path: &Path) -> bool {
        self.0.contains(path)
    }
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(s: &str) -> String {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    std::ffi::OsString::from_vec(out)
        .to_string_lossy()
        .into_owned()
}

/// Finds `volume` of the pod with `uid` under `root` (the kubelet root). `pv` is the bound
/// PV's name for a PVC (from the PVC's `spec.volumeName`).
pub fn locate(
    root: &Path,
    uid: &str,
    volume: &PodVolume,
    pv: Option<&str>,
    mounts: &Mounts,
) -> Result<PathBuf, Skip> {
    let pod_dir = root.join("pods").join(uid);
    let dir = pv.unwrap_or(&volume.name);
    if !found(&pod_dir.join("volumeDevices"), dir).is_empty() {
        return Err(Skip::Block {
            volume: volume.name.clone(),
        });
    }
    let mut matches = found(&pod_dir.join("volumes"), dir);
    let path = match matches.len() {
        0 => {
            return Err(Skip::NotFound {
                volume: volume.name.clone(),
                dir: dir.to_string(),
                pod_dir,
            });
        }
        1 => matches.remove(0),
        _ => {
            return Err(Skip::Ambiguous {
                volume: volume.name.clone(),
                paths: matches,
            });
        }
    };
    // CSI: the data is in `mount/`, beside vol_data.json.
    let csi = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "kubernetes.io~csi");
    let path = if csi { path.join("mount") } else { path };
    if volume.source != Source::EmptyDir && !mounts.contains(&path) {
        return Err(Skip::NotMounted {
            volume: volume.name.clone(),
            path,
        });
    }
    Ok(path)
}

/// `base/*/dir` that exist (without following a symlink at `dir`).
fn found(base: &Path, dir: &str) -> Vec<PathBuf> {
    let Ok(plugins) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = plugins
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(dir))
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        let m = Mounts::parse(
            "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
             37 35 98:0 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount rw - ext4 /dev/sdb rw\n",
        );
        assert!(m.contains(Path::new("/mnt/with space")));
        assert!(m.contains(Path::new(
            "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount"
        )));
        assert!(!m.contains(Path::new("/mnt")));
    }

    /// A pod directory laid out as the kubelet lays it out.
    struct Kubelet {
        root: tempfile::TempDir,
        /// Bind mounts to undo.
        mounted: Vec<PathBuf>,
    }

    impl Kubelet {
        fn new() -> Kubelet {
            Kubelet {
                root: tempfile::tempdir().unwrap(),
                mounted: Vec::new(),
            }
        }
        fn dir(&self, rel: &str) -> PathBuf {
            let p = self.root.path().join(rel);
            std::fs::create_dir_all(&p).unwrap();
            p
        }
        /// Bind-mounts a fresh directory holding one file on `rel`.
        fn bind(&mut self, rel: &str, source: &Path) {
            let target = self.dir(rel);
            std::fs::create_dir_all(source).unwrap();
            std::fs::write(source.join("PG_VERSION"), b"16").unwrap();
            let ok = std::process::Command::new("mount")
                .arg("--bind")
                .arg(source)
                .arg(&target)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount --bind {}", target.display());
            self.mounted.push(target);
        }
    }

    impl Drop for Kubelet {
        fn drop(&mut self) {
            for m in self.mounted.iter().rev() {
                let _ = std::process::Command::new("umount").arg(m).status();
            }
        }
    }

    fn vol(name: &str, source: Source) -> PodVolume {
        PodVolume {
            name: name.into(),
            source,
            mounted: true,
        }
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn each_volume_kind_is_found_where_the_kubelet_puts_it() {
        let mut k = Kubelet::new();
        let root = k.root.path().to_path_buf();
        let pod = "pods/0f3c";
        k.dir(&format!("{pod}/volumes/kubernetes.io~empty-dir/cache"));
        k.dir(&format!("{pod}/volumes/kubernetes.io~configmap/config"));
        k.dir(&format!("{pod}/volume-subpaths/data/app/0"));
        k.dir(&format!("{pod}/volumeDevices/kubernetes.io~csi/pv-block"));
        std::fs::write(
            k.dir(&format!("{pod}/volumes/kubernetes.io~csi/pv-data"))
                .join("vol_data.json"),
            br#"{"driverName":"disk.csi.azure.com"}"#,
        )
        .unwrap();
        k.dir(&format!("{pod}/volumes/kubernetes.io~csi/pv-data/mount"));
        k.dir(&format!("{pod}/volumes/kubernetes.io~azure-file/share"));
        k.dir(&format!("{pod}/volumes/kubernetes.io~nfs/pv-nfs"));
        let mounts = Mounts::read().unwrap();

        // emptyDir: a plain directory, by volume name.
        let cache = vol("cache", Source::EmptyDir);
        assert_eq!(
            locate(&root, "0f3c", &cache, None, &mounts).unwrap(),
            root.join(format!("{pod}/volumes/kubernetes.io~empty-dir/cache"))
        );
        // Block-mode PVC: refused, with why.
        let block = vol("raw", Source::Claim("raw".into()));
        assert!(matches!(
            locate(&root, "0f3c", &block, Some("pv-block"), &mounts),
            Err(Skip::Block { .. })
        ));
        // Not set up, or a wrong pod: named.
        let e = locate(&root, "0f3c", &cache, Some("pv-gone"), &mounts).unwrap_err();
        assert!(matches!(e, Skip::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("pv-gone"), "{e}");

        // CSI, in-tree Azure File and NFS: must be mount points.
        let data = vol("data", Source::Claim("data-postgresql-0".into()));
        let share = vol("share", Source::InTree("azureFile"));
        let nfs = vol("nfs", Source::Claim("nfs".into()));
        for (v, pv, rel) in [
            (&data, Some("pv-data"), "kubernetes.io~csi/pv-data/mount"),
            (&share, None, "kubernetes.io~azure-file/share"),
            (&nfs, Some("pv-nfs"), "kubernetes.io~nfs/pv-nfs"),
        ] {
            let path = root.join(format!("{pod}/volumes/{rel}"));
            assert_eq!(
                locate(&root, "0f3c", v, pv, &mounts),
                Err(Skip::NotMounted {
                    volume: v.name.clone(),
                    path: path.clone()
                }),
                "an unmounted {rel} is never backed up as empty"
            );
        }
        if !is_root() {
            return;
        }
        let disks = tempfile::tempdir().unwrap();
        k.bind(
            &format!("{pod}/volumes/kubernetes.io~csi/pv-data/mount"),
            &disks.path().join("disk"),
        );
        k.bind(
            &format!("{pod}/volumes/kubernetes.io~azure-file/share"),
            &disks.path().join("smb"),
        );
        let mounts = Mounts::read().unwrap();
        let found = locate(&root, "0f3c", &data, Some("pv-data"), &mounts).unwrap();
        assert_eq!(
            found,
            root.join(format!("{pod}/volumes/kubernetes.io~csi/pv-data/mount"))
        );
        assert!(
            found.join("PG_VERSION").exists(),
            "the mounted disk's files"
        );
        assert!(locate(&root, "0f3c", &share, None, &mounts).is_ok());
        assert!(locate(&root, "0f3c", &nfs, Some("pv-nfs"), &mounts).is_err());
    }

    #[test]
    fn a_volume_in_two_plugin_directories_is_ambiguous() {
        let k = Kubelet::new();
        k.dir("pods/u/volumes/kubernetes.io~empty-dir/x");
        k.dir("pods/u/volumes/kubernetes.io~other/x");
        let e = locate(
            k.root.path(),
            "u",
            &vol("x", Source::EmptyDir),
            None,
            &Mounts::read().unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(e, Skip::Ambiguous { ref paths, .. } if paths.len() == 2),
            "{e}"
        );
    }
}
