//! Materialising a component's `files` into the directory its guest sees.
//!
//! Spin copies the granted files into a private directory and mounts that,
//! so a guest sees exactly what the manifest names and nothing that appears
//! next to it later. Bantam does the same. Every path is checked to stay
//! inside the application directory: a pattern with `..`, or a symbolic link
//! pointing out of the app, is refused here, before any guest runs.

use std::fs;
use std::path::{Component as PathComponent, Path, PathBuf};

use bantam_manifest::FileMount;

/// Why a component's files could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// A pattern or source reaches outside the application directory.
    #[error("files entry `{0}` reaches outside the application directory")]
    OutsideApp(String),
    /// A destination is not an absolute guest path.
    #[error("files destination `{0}` must be an absolute path such as `/assets`")]
    RelativeDestination(String),
    /// A glob pattern does not parse.
    #[error("files pattern `{pattern}` is invalid: {message}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// The parser's explanation.
        message: String,
    },
    /// A mapping's source does not exist.
    #[error("files source `{}` does not exist", .0.display())]
    MissingSource(PathBuf),
    /// A symbolic link points outside the application directory.
    #[error("`{}` is a symbolic link to `{}`, outside the application directory", .link.display(), .target.display())]
    SymlinkEscapes {
        /// The link inside the app.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// Reading or copying a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> FilesError + '_ {
    move |source| FilesError::Io { path: path.to_path_buf(), source }
}

/// Copy the files granted by `mounts` (minus `exclude`) from `app_dir` into
/// `root`, laid out as the guest will see them when `root` is mounted at `/`.
pub(crate) fn materialise(
    app_dir: &Path,
    mounts: &[FileMount],
    exclude: &[String],
    root: &Path,
) -> Result<(), FilesError> {
    let app_dir = app_dir.canonicalize().map_err(io_error(app_dir))?;
    fs::create_dir_all(root).map_err(io_error(root))?;
    let exclude = exclude
        .iter()
        .map(|pattern| {
            glob::Pattern::new(pattern).map_err(|e| FilesError::BadPattern {
                pattern: pattern.clone(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let excluded = |relative: &Path| exclude.iter().any(|p| p.matches_path(relative));

    for mount in mounts {
        match mount {
            FileMount::Glob(pattern) => {
                ensure_relative_inside(pattern)?;
                let full = app_dir.join(pattern);
                let paths = glob::glob(&full.to_string_lossy()).map_err(|e| {
                    FilesError::BadPattern { pattern: pattern.clone(), message: e.to_string() }
                })?;
                for path in paths {
                    let path = path.map_err(|e| FilesError::Io {
                        path: e.path().to_path_buf(),
                        source: e.into(),
                    })?;
                    let relative = path.strip_prefix(&app_dir).unwrap_or(&path).to_path_buf();
                    if excluded(&relative) {
                        continue;
                    }
                    let target = checked_target(&app_dir, &path)?;
                    if target.is_file() {
                        copy_file(&target, &root.join(&relative))?;
                    }
                }
            }
            FileMount::Mapping { source, destination } => {
                ensure_relative_inside(source)?;
                let Some(destination) = destination.strip_prefix('/') else {
                    return Err(FilesError::RelativeDestination(destination.clone()));
                };
                ensure_relative_inside(destination)?;
                let source_path = app_dir.join(source);
                if !source_path.exists() {
                    return Err(FilesError::MissingSource(source_path));
                }
                let source_path = checked_target(&app_dir, &source_path)?;
                let dest_root = root.join(destination);
                if source_path.is_file() {
                    copy_file(&source_path, &dest_root)?;
                    continue;
                }
                for entry in walkdir::WalkDir::new(&source_path).follow_links(false) {
                    let entry = entry.map_err(|e| FilesError::Io {
                        path: e.path().map(Path::to_path_buf).unwrap_or_default(),
                        source: e.into(),
                    })?;
                    let path = entry.path();
                    let relative_to_app = path.strip_prefix(&app_dir).unwrap_or(path);
                    if excluded(relative_to_app) {
                        continue;
                    }
                    let target = checked_target(&app_dir, path)?;
                    let inside = path.strip_prefix(&source_path).unwrap_or(path);
                    if target.is_file() {
                        copy_file(&target, &dest_root.join(inside))?;
                    } else if target.is_dir() {
                        // A mounted directory keeps its empty subdirectories,
                        // as a direct mount of it would.
                        let dir = dest_root.join(inside);
                        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Refuse absolute paths and `..` components: a manifest may only grant
/// what lies under its own directory.
fn ensure_relative_inside(path: &str) -> Result<(), FilesError> {
    let escapes = Path::new(path).components().any(|c| {
        matches!(c, PathComponent::ParentDir | PathComponent::RootDir | PathComponent::Prefix(_))
    });
    if escapes { Err(FilesError::OutsideApp(path.to_string())) } else { Ok(()) }
}

/// Resolve `path` (which may be a symbolic link) and check that what it
/// points at is still inside the app directory.
fn checked_target(app_dir: &Path, path: &Path) -> Result<PathBuf, FilesError> {
    let target = path.canonicalize().map_err(io_error(path))?;
    if target.starts_with(app_dir) {
        Ok(target)
    } else {
        Err(FilesError::SymlinkEscapes { link: path.to_path_buf(), target })
    }
}

fn copy_file(from: &Path, to: &Path) -> Result<(), FilesError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_error(parent))?;
    }
    fs::copy(from, to).map_err(io_error(from))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, contents) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, contents).unwrap();
        }
        dir
    }

    fn read(root: &Path, path: &str) -> Option<String> {
        fs::read_to_string(root.join(path)).ok()
    }

    #[test]
    fn globs_copy_matching_files_minus_excluded() {
        let app = tree(&[
            ("static/a.txt", "a"),
            ("static/b.jpg", "b"),
            ("static/sub/c.txt", "c"),
            ("secret.txt", "s"),
        ]);
        let out = tempfile::tempdir().unwrap();
        materialise(
            app.path(),
            &[FileMount::Glob("static/**/*".into())],
            &["static/**/*.jpg".into()],
            out.path(),
        )
        .unwrap();
        assert_eq!(read(out.path(), "static/a.txt").as_deref(), Some("a"));
        assert_eq!(read(out.path(), "static/sub/c.txt").as_deref(), Some("c"));
        assert_eq!(read(out.path(), "static/b.jpg"), None);
        assert_eq!(read(out.path(), "secret.txt"), None);
    }

    #[test]
    fn mappings_place_directories_and_files_at_their_destination() {
        let app = tree(&[("assets/index.html", "<h1>"), ("config.json", "{}")]);
        fs::create_dir_all(app.path().join("assets/uploads/empty")).unwrap();
        let out = tempfile::tempdir().unwrap();
        materialise(
            app.path(),
            &[
                FileMount::Mapping { source: "assets".into(), destination: "/www".into() },
                FileMount::Mapping {
                    source: "config.json".into(),
                    destination: "/etc/app.json".into(),
                },
            ],
            &[],
            out.path(),
        )
        .unwrap();
        assert_eq!(read(out.path(), "www/index.html").as_deref(), Some("<h1>"));
        assert_eq!(read(out.path(), "etc/app.json").as_deref(), Some("{}"));
        assert!(out.path().join("www/uploads/empty").is_dir(), "empty directories are kept");
    }

    #[test]
    fn parent_directories_and_absolute_paths_are_refused() {
        let app = tree(&[("a.txt", "a")]);
        let out = tempfile::tempdir().unwrap();
        for mount in [
            FileMount::Glob("../*".into()),
            FileMount::Glob("/etc/*".into()),
            FileMount::Mapping { source: "..".into(), destination: "/".into() },
            FileMount::Mapping { source: "a.txt".into(), destination: "/../x".into() },
        ] {
            let err = materialise(app.path(), &[mount], &[], out.path()).unwrap_err();
            assert!(matches!(err, FilesError::OutsideApp(_)), "{err}");
        }
    }

    #[test]
    fn symlinks_out_of_the_app_are_refused() {
        let outside = tree(&[("passwd", "root")]);
        let app = tree(&[("static/ok.txt", "ok")]);
        std::os::unix::fs::symlink(outside.path().join("passwd"), app.path().join("static/leak"))
            .unwrap();
        let out = tempfile::tempdir().unwrap();
        let err = materialise(app.path(), &[FileMount::Glob("static/*".into())], &[], out.path())
            .unwrap_err();
        assert!(err.to_string().contains("outside the application directory"), "{err}");
    }
}
