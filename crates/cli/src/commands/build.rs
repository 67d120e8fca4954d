//! `bantam build`: run each component's `[component.<id>.build]` command.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use clap::Args;

/// Flags of `bantam build`, as `spin build` has them.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The application to build: a spin.toml or a directory holding one.
    #[arg(short = 'f', long = "from", alias = "file", value_name = "APP")]
    pub from: Option<PathBuf>,
    /// Build only these components (repeatable).
    #[arg(short = 'c', long = "component-id", value_name = "ID")]
    pub component_ids: Vec<String>,
}

/// Run `bantam build`.
pub fn run(args: BuildArgs) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let manifest_path = bantam_app::find_manifest(args.from.as_deref(), &cwd)?;
    build(&manifest_path, &args.component_ids)
}

/// Run the build command of every component of the app at `manifest_path`
/// (or only of `only`, when not empty), stopping at the first failure.
pub fn build(manifest_path: &std::path::Path, only: &[String]) -> anyhow::Result<()> {
    let manifest = bantam_manifest::load(manifest_path)?;
    for (id, component) in &manifest.components {
        if !only.is_empty() && !only.contains(id) {
            continue;
        }
        let Some(build) = &component.build else {
            continue;
        };
        let workdir = match &build.workdir {
            Some(workdir) => manifest.manifest_dir.join(workdir),
            None => manifest.manifest_dir.clone(),
        };
        for command in &build.command {
            eprintln!("Building component {id} with `{command}`");
            let status =
                Command::new("sh")
                    .arg("-c")
                    .arg(command)
                    .current_dir(&workdir)
                    .status()
                    .with_context(|| format!("cannot run the build command of component `{id}`"))?;
            if !status.success() {
                bail!(
                    "build command for component `{id}` failed with {status}: `{command}` in {}",
                    workdir.display()
                );
            }
        }
    }
    eprintln!("Finished building all components");
    Ok(())
}
