//! Placeholder, filled in next.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {}
pub fn compare(_a: &crate::cli::CompareArgs) -> Result<(), CompareError> {
    Ok(())
}
