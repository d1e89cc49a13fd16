//! attnflow-core
