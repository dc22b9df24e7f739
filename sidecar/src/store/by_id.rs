//! Trades kept in a set keyed by their own id: the key is the shared trade itself, so
//! the overlay and the hot state's recent window hold a trade without a copy of its id
//! (an allocation and a free a trade on the writer's path).

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::store::model::Trade;

/// A shared trade that hashes and compares as its id: a `HashSet<ById>` maps an id
/// (`get(&str)`) to the trade.
#[derive(Debug, Clone)]
pub(crate) struct ById(pub Arc<Trade>);

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

/// As `str` hashes, which `Borrow<str>` requires.
impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.as_str().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::change::tests::trade;
    use crate::store::model::Status;
    use std::collections::HashSet;

    #[test]
    fn a_set_of_trades_is_looked_up_and_replaced_by_id() {
        let mut set = HashSet::new();
        set.insert(ById(Arc::new(trade("a", 1, 1, Status::Filled))));
        let newer = ById(Arc::new(trade("a", 2, 2, Status::Pending)));
        assert_eq!(set.replace(newer).map(|old| old.0.version), Some(1));
        assert_eq!(set.get("a").map(|t| t.0.version), Some(2));
        assert_eq!((set.len(), set.contains("b")), (1, false));
    }
}
