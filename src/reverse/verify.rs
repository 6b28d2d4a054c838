//! Verify after apply (`reconcile.verify = true`): the cohort as downloaded once after the
//! last call, compared with the membership the run expected it to have. What differs —
//! expected members that are missing, members nobody expected — is the drift, reported id
//! by id and in the exit code.

use super::diff::diff;
use super::idset::{IdCollector, IdList, IdSetError};

/// Threads the comparison runs on.
const THREADS: usize = 2;

/// What the cohort holds that it should not, and lacks that it should.
#[derive(Debug, Default)]
pub struct Drift {
    /// Expected, not in the cohort.
    pub missing: IdList,
    /// In the cohort, not expected.
    pub unexpected: IdList,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty()
    }
}

/// Compares the `actual` membership with the `expected` one.
pub fn compare(expected: &IdList, actual: &IdCollector) -> Result<Drift, IdSetError> {
    let mut want = IdCollector::new();
    for id in expected.iter() {
        want.push(id)?;
    }
    // `add` = in the cohort and not expected; `remove` = expected and not in the cohort.
    let d = diff(actual, &want, THREADS)?;
    Ok(Drift {
        missing: d.remove,
        unexpected: d.add,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_named_both_ways() {
        let expected: IdList = ["a", "b", "c"].into_iter().collect();
        let mut actual = IdCollector::new();
        for id in ["a", "c", "z"] {
            actual.push(id.as_bytes()).expect("push");
        }
        let d = compare(&expected, &actual).expect("compare");
        assert_eq!(d.missing.sample(5), vec!["b".to_string()]);
        assert_eq!(d.unexpected.sample(5), vec!["z".to_string()]);
        let mut same = IdCollector::new();
        for id in ["c", "b", "a"] {
            same.push(id.as_bytes()).expect("push");
        }
        assert!(compare(&expected, &same).expect("compare").is_empty());
    }
}
