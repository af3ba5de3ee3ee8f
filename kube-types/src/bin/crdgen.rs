//! Writes every CRD of `flotilla-kube-types` into a folder (the repo's `crds/`), one
//! `<plural>.<group>.yaml` per kind, and removes generated files of kinds that are gone;
//! with a second argument, also the field reference (the repo's `docs/crds.md`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), reference, None) = (args.next(), args.next(), args.next()) else {
        eprintln!(
            "usage: crdgen DIR [REFERENCE.md]   (e.g. cargo run -p flotilla-kube-types --bin crdgen -- crds/ docs/crds.md)"
        );
        return ExitCode::from(2);
    };
    let written = write(PathBuf::from(dir)).and_then(|()| match reference {
        Some(path) => {
            let path = PathBuf::from(path);
            std::fs::write(&path, flotilla_kube_types::reference::reference())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(())
        }
        None => Ok(()),
    });
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write(dir: PathBuf) -> Result<(), String> {
    let files = flotilla_kube_types::crd_files().map_err(|e| format!("serializing a CRD: {e}"))?;
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .path();
        let stale = path.extension().is_some_and(|x| x == "yaml")
            && std::fs::read_to_string(&path)
                .is_ok_and(|t| t.starts_with(flotilla_kube_types::GENERATED_HEADER))
            && !files
                .iter()
                .any(|f| path.file_name() == Some(f.file_name.as_ref()));
        if stale {
            std::fs::remove_file(&path).map_err(|e| format!("removing {}: {e}", path.display()))?;
            println!("removed {}", path.display());
        }
    }
    for f in files {
        let path = dir.join(&f.file_name);
        std::fs::write(&path, f.yaml).map_err(|e| format!("writing {}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
