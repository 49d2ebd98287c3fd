//! Keeping each query and each answer between an HTTP node and a shard within one NATS message
//! (the servers' `max_payload`, 8 MB in `deploy/local-cluster.sh`): how many bytes a value takes
//! as JSON, and the longest prefix of a list that fits in a budget. A shard answers a large
//! read a page at a time ([`crate::wire::Reply::ExposurePage`], [`crate::wire::Reply::PresentPage`],
//! a `Visits` answer shorter than the persons asked), and the asking node asks again for the
//! rest ([`crate::Node`]), so that the answer to a trace of a large cluster of cases (hundreds
//! of thousands of contacts on one shard) is never a message the servers refuse.

use serde::Serialize;

/// Bytes of JSON a page's envelope (the reply's variant, field names, brackets) takes at most
/// besides its items.
pub(crate) const ENVELOPE_BYTES: usize = 64;

/// The smallest budget a node uses, whatever it is configured with: a page holds at least one
/// item in any case, and a smaller budget only makes more rounds.
pub const MIN_MESSAGE_BYTES: usize = 1024;

struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How many bytes `value` takes as JSON (`serde_json`, as the queries and answers are sent).
pub fn json_len(value: &impl Serialize) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        // Not serializable: it is not sent either, so it takes nothing of a budget.
        Err(_) => 0,
    }
}

/// Takes from `items` the longest run whose JSON (with a separator each and
/// [`ENVELOPE_BYTES`]) fits in `budget` bytes; at least one item, so that every page makes
/// progress (a single item over the budget goes alone). The item that did not fit stays next.
fn take_run<T: Serialize, I: Iterator<Item = T>>(
    items: &mut std::iter::Peekable<I>,
    budget: usize,
) -> Vec<T> {
    let mut run = Vec::new();
    let mut used = ENVELOPE_BYTES;
    while let Some(item) = items.peek() {
        let size = json_len(item) + 1;
        if !run.is_empty() && used + size > budget {
            break;
        }
        used += size;
        run.extend(items.next());
    }
    run
}

/// The longest prefix of `items` that fits in `budget` bytes of JSON (as [`take_run`] counts),
/// and whether items were left out.
pub fn fill<T: Serialize>(items: impl IntoIterator<Item = T>, budget: usize) -> (Vec<T>, bool) {
    let mut items = items.into_iter().peekable();
    let page = take_run(&mut items, budget);
    (page, items.peek().is_some())
}

/// Splits `items` into runs that fit in `budget` bytes of JSON each (as [`take_run`] counts),
/// in their order; none is empty, and a single item over the budget is a run of its own.
pub fn runs<T: Serialize>(items: Vec<T>, budget: usize) -> Vec<Vec<T>> {
    let mut items = items.into_iter().peekable();
    let mut out = Vec::new();
    while items.peek().is_some() {
        out.push(take_run(&mut items, budget));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_len_is_the_length_of_the_json() {
        let value = vec![("V-1".to_string(), 3u32), ("V-22".to_string(), 10)];
        assert_eq!(
            json_len(&value),
            serde_json::to_vec(&value).expect("json").len()
        );
    }

    #[test]
    fn pages_fit_the_budget_and_lose_nothing() {
        let items: Vec<String> = (0..200).map(|i| format!("person-{i}")).collect();
        let budget = 300;
        let mut rest: &[String] = &items;
        let mut again = Vec::new();
        let mut pages = 0;
        loop {
            let (page, more) = fill(rest.iter().cloned(), budget);
            let sent = serde_json::to_vec(&page).expect("json").len();
            assert!(
                sent + ENVELOPE_BYTES <= budget,
                "{sent} bytes in a page of {budget}"
            );
            assert!(!page.is_empty());
            rest = &rest[page.len()..];
            again.extend(page);
            pages += 1;
            if !more {
                break;
            }
        }
        assert!(rest.is_empty());
        assert_eq!(again, items);
        assert!(pages > 5, "{pages} pages");
        // Everything fits: one page, nothing more.
        assert_eq!(fill(items.clone(), usize::MAX), (items.clone(), false));
        // An item over the budget still goes, alone.
        let (page, more) = fill(items.iter().cloned(), 10);
        assert_eq!((page.len(), more), (1, true));
        assert_eq!(fill(Vec::<String>::new(), 10), (Vec::new(), false));
    }

    #[test]
    fn runs_fit_the_budget_in_order() {
        let items: Vec<String> = (0..200).map(|i| format!("p{i}")).collect();
        let split = runs(items.clone(), 200);
        assert!(split.len() > 3);
        for run in &split {
            assert!(!run.is_empty());
            assert!(serde_json::to_vec(run).expect("json").len() + ENVELOPE_BYTES <= 200);
        }
        assert_eq!(split.concat(), items);
        assert_eq!(runs(vec!["x".repeat(500)], 100).len(), 1);
        assert!(runs(Vec::<String>::new(), 100).is_empty());
    }
}
