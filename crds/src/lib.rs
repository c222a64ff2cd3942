//! FaceKeyDeployment custom resource types (group `facekey.dev`, version `v1alpha1`).
