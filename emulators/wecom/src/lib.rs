//! A WeCom that runs on loopback, for tests and `gateway sandbox`: a fake AI Bot long-connection
//! server (`openws`), a fake REST API with a callback signer (`rest`).

pub mod openws;
pub mod rest;
