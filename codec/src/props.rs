//! Property identifiers and property-block parsing.

use core::fmt;
use core::num::NonZeroU32;

use crate::{EncodeError, SubscriptionIds, UserProperties};

impl UserProperties {
    /// No user properties.
    pub fn new() -> UserProperties {
        UserProperties::default()
    }

    /// Encodes `pairs` into a new block (allocates once; for senders, not the hot path).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<UserProperties, EncodeError> {
        let _ = pairs;
        todo!("codec helper implements")
    }

    /// The (name, value) pairs in wire order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        let _ = &self.raw;
        todo!("codec helper implements");
        #[allow(unreachable_code)]
        core::iter::empty()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl SubscriptionIds {
    /// Encodes `ids` into a new block.
    pub fn from_ids(ids: &[NonZeroU32]) -> SubscriptionIds {
        let _ = ids;
        todo!("codec helper implements")
    }

    pub fn iter(&self) -> impl Iterator<Item = NonZeroU32> + '_ {
        let _ = &self.raw;
        todo!("codec helper implements");
        #[allow(unreachable_code)]
        core::iter::empty()
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl PartialEq for UserProperties {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}
impl Eq for UserProperties {}

impl PartialEq for SubscriptionIds {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}
impl Eq for SubscriptionIds {}

impl fmt::Debug for UserProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl fmt::Debug for SubscriptionIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
