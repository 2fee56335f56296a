pub mod pgvector;
