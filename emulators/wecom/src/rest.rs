//! Fake WeCom REST API (gettoken, message/send, media/upload, media/get) and the callback signer.
