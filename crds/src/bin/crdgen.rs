//! `crdgen`: writes the FaceKeyDeployment CRD YAML to `crds/facekeydeployment.yaml` and to the
//! kustomize base (`manifests/crd/facekeydeployment.yaml`); with a path argument writes only
//! there, and `-` prints to stdout.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = facekey_crds::crd_yaml()?;
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let targets = match std::env::args().nth(1) {
        Some(arg) if arg == "-" => {
            print!("{yaml}");
            return Ok(());
        }
        Some(arg) => vec![PathBuf::from(arg)],
        None => vec![
            crate_dir.join("facekeydeployment.yaml"),
            crate_dir.join("../manifests/crd/facekeydeployment.yaml"),
        ],
    };
    for target in targets {
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&target, &yaml)?;
        eprintln!("wrote {}", target.display());
    }
    Ok(())
}
