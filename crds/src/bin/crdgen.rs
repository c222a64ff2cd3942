//! `crdgen`: writes the FaceKeyDeployment CRD YAML to `crds/facekeydeployment.yaml` (or stdout with `-`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let yaml = facekey_crds::crd_yaml()?;
    let target = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("facekeydeployment.yaml"),
        PathBuf::from,
    );
    if target.as_os_str() == "-" {
        print!("{yaml}");
    } else {
        std::fs::write(&target, yaml)?;
        eprintln!("wrote {}", target.display());
    }
    Ok(())
}
