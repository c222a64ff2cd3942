//! Face vision pipeline: image decoding, MTCNN detection, alignment, embedding, liveness and
//! quality, each in its own module over ONNX Runtime sessions built once at start-up.
