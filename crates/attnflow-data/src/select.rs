//! Budgeted selection (§6.2).
//!
//! The paper's form `min Σ cᵢxᵢ s.t. Σ wᵢxᵢ ≤ W` is solved by selecting
//! nothing (`attnflow verify` shows it). attnflow solves the two meaningful forms:
//!
//! * **budget**: maximise Σ vᵢxᵢ subject to Σ wᵢxᵢ ≤ W (0/1 knapsack);
//! * **cover**: minimise Σ cᵢxᵢ subject to Σ aᵢxᵢ ≥ R (min-knapsack), solved
//!   exactly as the knapsack of the items *left out*: leave out the set of
//!   greatest cost whose amount is at most Σaᵢ − R.
//!
//! Methods, chosen automatically: dynamic programming over integer weights
//! when the table fits (exact); branch and bound with the LP-relaxation
//! bound otherwise (exact when it finishes within its node limit); and for
//! very large inputs the greedy ratio rule, whose answer comes with the
//! Dantzig LP bound, a proven ceiling on the optimum, so the reported gap
//! bounds how far from optimal the answer can be.

use serde::Serialize;

use crate::error::{DataError, DataResult};

/// An item to select.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// Identifier shown in results (an id column, or the row number).
    pub id: String,
    /// Weight (budget form) or cost (cover form).
    pub weight: f64,
    /// Value (budget form) or amount covered (cover form).
    pub value: f64,
}

/// How the answer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Dynamic programming over integer weights: exact.
    DynamicProgramming,
    /// Branch and bound: exact unless it hit its node limit.
    BranchAndBound,
    /// Greedy by value/weight ratio with the LP bound.
    Greedy,
}

/// Which method to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodChoice {
    /// Exact where feasible, greedy with a bound beyond.
    Auto,
    /// Exact only (dynamic programming or branch and bound without a node
    /// limit); may be slow.
    Exact,
    /// Greedy with the LP bound.
    Greedy,
}

/// Limits of the exact methods.
#[derive(Debug, Clone, Copy)]
pub struct SelectOptions {
    /// Method choice.
    pub method: MethodChoice,
    /// Largest DP table (items × (budget+1)) attempted.
    pub dp_cell_limit: u64,
    /// Largest input given to branch and bound under `Auto`.
    pub branch_item_limit: usize,
    /// Node limit of branch and bound under `Auto`.
    pub node_limit: u64,
}

impl Default for SelectOptions {
    fn default() -> Self {
        Self {
            method: MethodChoice::Auto,
            dp_cell_limit: 200_000_000,
            branch_item_limit: 20_000,
            node_limit: 5_000_000,
        }
    }
}

/// The answer to a selection problem.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    /// `budget` or `cover`.
    pub objective: &'static str,
    /// The method that produced the answer.
    pub method: Method,
    /// Whether the answer is proven optimal.
    pub exact: bool,
    /// Indices (into the input) of the chosen items, ascending.
    pub chosen: Vec<usize>,
    /// Σ weight of the chosen items (cost, in the cover form).
    pub total_weight: f64,
    /// Σ value of the chosen items (amount covered, in the cover form).
    pub total_value: f64,
    /// The budget W, or the required amount R.
    pub limit: f64,
    /// Proven bound on the optimum: an upper bound on the best value
    /// (budget form) or a lower bound on the least cost (cover form).
    pub bound: f64,
    /// How far the answer may be from the optimum: |bound − answer|
    /// (0 when exact).
    pub gap: f64,
    /// Branch-and-bound nodes explored, when used.
    pub nodes: Option<u64>,
}

impl Selection {
    /// The gap relative to the bound (0 when exact).
    pub fn relative_gap(&self) -> f64 {
        if self.gap == 0.0 || self.bound == 0.0 {
            0.0
        } else {
            self.gap / self.bound.abs()
        }
    }
}

struct Knapsack {
    chosen: Vec<usize>,
    value: f64,
    bound: f64,
    method: Method,
    exact: bool,
    nodes: Option<u64>,
}

fn validate(items: &[Item], limit: f64, what: &str) -> DataResult<()> {
    if !limit.is_finite() || limit < 0.0 {
        return Err(DataError::Invalid {
            what: what.to_owned(),
            message: format!("must be a finite number ≥ 0, got {limit}"),
        });
    }
    for item in items {
        for (name, number) in [("weight", item.weight), ("value", item.value)] {
            if !number.is_finite() || number < 0.0 {
                return Err(DataError::Invalid {
                    what: format!("item {} {name}", item.id),
                    message: format!("must be a finite number ≥ 0, got {number}"),
                });
            }
        }
    }
    Ok(())
}

/// Maximises total value with total weight at most `budget`.
pub fn select_within_budget(
    items: &[Item],
    budget: f64,
    options: &SelectOptions,
) -> DataResult<Selection> {
    validate(items, budget, "budget")?;
    let weights: Vec<f64> = items.iter().map(|item| item.weight).collect();
    let values: Vec<f64> = items.iter().map(|item| item.value).collect();
    let solved = knapsack(&weights, &values, budget, options)?;
    let total_weight = solved.chosen.iter().map(|&index| weights[index]).sum();
    Ok(Selection {
        objective: "budget",
        method: solved.method,
        exact: solved.exact,
        total_weight,
        total_value: solved.value,
        limit: budget,
        bound: solved.bound,
        gap: if solved.exact {
            0.0
        } else {
            (solved.bound - solved.value).max(0.0)
        },
        nodes: solved.nodes,
        chosen: solved.chosen,
    })
}

/// Minimises total weight (cost) with total value (amount) at least
/// `required`.
pub fn select_cover(
    items: &[Item],
    required: f64,
    options: &SelectOptions,
) -> DataResult<Selection> {
    validate(items, required, "required amount")?;
    let total_amount: f64 = items.iter().map(|item| item.value).sum();
    if total_amount < required {
        return Err(DataError::Invalid {
            what: "required amount".to_owned(),
            message: format!(
                "cannot be covered: all items together cover {total_amount}, less than {required}"
            ),
        });
    }
    let total_cost: f64 = items.iter().map(|item| item.weight).sum();
    // Leave out the costliest set whose amount still leaves `required`.
    let amounts: Vec<f64> = items.iter().map(|item| item.value).collect();
    let costs: Vec<f64> = items.iter().map(|item| item.weight).collect();
    let slack = total_amount - required;
    let left_out = knapsack(&amounts, &costs, slack, options)?;
    let mut excluded = vec![false; items.len()];
    for &index in &left_out.chosen {
        excluded[index] = true;
    }
    let chosen: Vec<usize> = (0..items.len()).filter(|&index| !excluded[index]).collect();
    let total_weight: f64 = chosen.iter().map(|&index| costs[index]).sum();
    let total_value: f64 = chosen.iter().map(|&index| amounts[index]).sum();
    let bound = (total_cost - left_out.bound).max(0.0);
    Ok(Selection {
        objective: "cover",
        method: left_out.method,
        exact: left_out.exact,
        chosen,
        total_weight,
        total_value,
        limit: required,
        bound: if left_out.exact { total_weight } else { bound },
        gap: if left_out.exact {
            0.0
        } else {
            (total_weight - bound).max(0.0)
        },
        nodes: left_out.nodes,
    })
}

fn is_integral(number: f64) -> bool {
    number.fract() == 0.0 && number.abs() < 9.0e15
}

fn knapsack(
    weights: &[f64],
    values: &[f64],
    budget: f64,
    options: &SelectOptions,
) -> DataResult<Knapsack> {
    // Free items with value are always taken; items that cannot fit or add
    // nothing are never taken. The rest form the real problem.
    let mut always = Vec::new();
    let mut candidates = Vec::new();
    for index in 0..weights.len() {
        if values[index] <= 0.0 || weights[index] > budget {
            continue;
        }
        if weights[index] == 0.0 {
            always.push(index);
        } else {
            candidates.push(index);
        }
    }
    let free_value: f64 = always.iter().map(|&index| values[index]).sum();
    let sub_weights: Vec<f64> = candidates.iter().map(|&index| weights[index]).collect();
    let sub_values: Vec<f64> = candidates.iter().map(|&index| values[index]).collect();

    let integral = sub_weights.iter().all(|&weight| is_integral(weight));
    let capacity = budget.floor();
    let cells = (sub_weights.len() as f64) * (capacity.min(sub_weights.iter().sum::<f64>()) + 1.0);
    let mut solved = match options.method {
        MethodChoice::Greedy => greedy(&sub_weights, &sub_values, budget),
        _ if integral && cells <= options.dp_cell_limit as f64 => {
            dynamic_programming(&sub_weights, &sub_values, budget)
        }
        MethodChoice::Exact => branch_and_bound(&sub_weights, &sub_values, budget, u64::MAX),
        MethodChoice::Auto if sub_weights.len() <= options.branch_item_limit => {
            branch_and_bound(&sub_weights, &sub_values, budget, options.node_limit)
        }
        MethodChoice::Auto => greedy(&sub_weights, &sub_values, budget),
    };
    solved.chosen = solved
        .chosen
        .iter()
        .map(|&index| candidates[index])
        .chain(always)
        .collect();
    solved.chosen.sort_unstable();
    solved.value += free_value;
    solved.bound += free_value;
    if solved.exact {
        solved.bound = solved.value;
    }
    Ok(solved)
}

/// Exact 0/1 knapsack over integer weights: best[c] is the best value with
/// capacity c; one bit per (item, capacity) records the choice for the walk
/// back. O(n·W) time, O(W) values plus n·W bits.
fn dynamic_programming(weights: &[f64], values: &[f64], budget: f64) -> Knapsack {
    let total: f64 = weights.iter().sum();
    let capacity = budget.floor().min(total) as usize;
    let width = capacity + 1;
    let mut best = vec![0.0f64; width];
    let mut took = vec![0u64; (weights.len() * width).div_ceil(64)];
    for (item, (&weight, &value)) in weights.iter().zip(values).enumerate() {
        let weight = weight as usize;
        for room in (weight..width).rev() {
            let with = best[room - weight] + value;
            if with > best[room] {
                best[room] = with;
                let bit = item * width + room;
                took[bit / 64] |= 1 << (bit % 64);
            }
        }
    }
    let mut chosen = Vec::new();
    let mut room = capacity;
    for item in (0..weights.len()).rev() {
        let bit = item * width + room;
        if took[bit / 64] & (1 << (bit % 64)) != 0 {
            chosen.push(item);
            room -= weights[item] as usize;
        }
    }
    chosen.reverse();
    let value = chosen.iter().map(|&index| values[index]).sum();
    Knapsack {
        chosen,
        value,
        bound: value,
        method: Method::DynamicProgramming,
        exact: true,
        nodes: None,
    }
}

/// Items by decreasing value/weight (weights here are all positive).
fn by_ratio(weights: &[f64], values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        (values[b] / weights[b])
            .total_cmp(&(values[a] / weights[a]))
            .then(a.cmp(&b))
    });
    order
}

/// Dantzig's bound: the LP relaxation's optimum from position `start` of
/// the ratio order with `room` left: take whole items while they fit, then
/// the fitting fraction of the next. No 0/1 answer can beat it.
fn lp_bound(order: &[usize], weights: &[f64], values: &[f64], start: usize, room: f64) -> f64 {
    let mut room = room;
    let mut bound = 0.0;
    for &index in &order[start..] {
        if weights[index] <= room {
            room -= weights[index];
            bound += values[index];
        } else {
            bound += values[index] * (room / weights[index]);
            break;
        }
    }
    bound
}

/// Greedy: fill by ratio (skipping what no longer fits), then compare with
/// the single most valuable item; max of the two is at least half the
/// optimum. The LP bound caps the optimum, so `bound − value` bounds the gap
/// (and never exceeds the value of the first item that did not fit).
fn greedy(weights: &[f64], values: &[f64], budget: f64) -> Knapsack {
    let order = by_ratio(weights, values);
    let mut room = budget;
    let mut chosen = Vec::new();
    let mut value = 0.0;
    for &index in &order {
        if weights[index] <= room {
            room -= weights[index];
            value += values[index];
            chosen.push(index);
        }
    }
    if let Some(best) = (0..weights.len()).max_by(|&a, &b| values[a].total_cmp(&values[b])) {
        if values[best] > value {
            chosen = vec![best];
            value = values[best];
        }
    }
    let bound = lp_bound(&order, weights, values, 0, budget).max(value);
    Knapsack {
        chosen,
        value,
        bound,
        method: Method::Greedy,
        exact: false,
        nodes: None,
    }
}

/// Depth-first branch and bound in ratio order, taking the item first,
/// pruning any node whose LP bound cannot beat the best answer so far
/// (seeded with the greedy answer). Exact when it finishes within
/// `node_limit`; otherwise the best answer found with the root LP bound.
fn branch_and_bound(weights: &[f64], values: &[f64], budget: f64, node_limit: u64) -> Knapsack {
    let order = by_ratio(weights, values);
    let seed = greedy(weights, values, budget);
    let root_bound = seed.bound;
    let mut best_value = seed.value;
    let mut best: Vec<usize> = seed.chosen;
    let mut taken: Vec<bool> = vec![false; order.len()];
    let mut nodes: u64 = 0;
    let mut complete = true;
    // Explicit stack: (position in order, room left, value so far, whether
    // the item at `position - 1` was taken on this path).
    let mut stack: Vec<(usize, f64, f64, bool)> = vec![(0, budget, 0.0, false)];
    while let Some((position, room, value, took_previous)) = stack.pop() {
        if position > 0 {
            taken[position - 1] = took_previous;
        }
        nodes += 1;
        if nodes > node_limit {
            complete = false;
            break;
        }
        if value > best_value {
            best_value = value;
            best = (0..position)
                .filter(|&step| taken[step])
                .map(|step| order[step])
                .collect();
        }
        if position == order.len() {
            continue;
        }
        // Prune on the LP bound, with a hair of tolerance so float noise
        // never prunes a truly better branch.
        if value + lp_bound(&order, weights, values, position, room) <= best_value * (1.0 + 1e-12) {
            continue;
        }
        let index = order[position];
        stack.push((position + 1, room, value, false));
        if weights[index] <= room {
            stack.push((
                position + 1,
                room - weights[index],
                value + values[index],
                true,
            ));
        }
    }
    let value = best.iter().map(|&index| values[index]).sum();
    Knapsack {
        chosen: best,
        value,
        bound: if complete {
            value
        } else {
            root_bound.max(value)
        },
        method: Method::BranchAndBound,
        exact: complete,
        nodes: Some(nodes.min(node_limit)),
    }
}

/// Reads items from a data file (CSV with header, JSON Lines or Parquet):
/// `weight_column` and `value_column` must hold numbers ≥ 0 in every record;
/// `id_column`, when given, names the items (else the record number does).
/// Any record that is malformed or lacks a valid number stops the load with
/// its file and line: selecting over silently partial data would be wrong.
pub fn load_items(
    path: &std::path::Path,
    weight_column: &str,
    value_column: &str,
    id_column: Option<&str>,
) -> DataResult<Vec<Item>> {
    use crate::check::Checker;
    use crate::schema::Schema;
    use crate::source::Record;

    let quote = |text: &str| toml::Value::String(text.to_owned()).to_string();
    let mut text = format!(
        "[[field]]\nname = {}\ntype = \"float\"\nrequired = true\nmin = 0\n[[field]]\nname = {}\ntype = \"float\"\nrequired = true\nmin = 0\n",
        quote(weight_column),
        quote(value_column)
    );
    if let Some(id) = id_column {
        text.push_str(&format!(
            "[[field]]\nname = {}\ntype = \"string\"\n",
            quote(id)
        ));
    }
    let schema = Schema::parse(path, &text).map_err(|error| match error {
        DataError::Schema { message, .. } => DataError::Invalid {
            what: "columns".to_owned(),
            message,
        },
        other => other,
    })?;
    let mut checker = Checker::new(&schema);
    let mut source = crate::source::open_for_schema(path, &schema)?;
    let format = schema.format_of(path)?;
    let binding = checker.bind(source.columns(), path, format != crate::schema::Format::Csv)?;
    let mut record = Record::default();
    let mut items = Vec::new();
    while source.next_record(&mut record)? {
        match checker.check(&record, &binding) {
            Ok(values) => {
                let number = |index: usize| values[index].as_f64().unwrap_or(0.0);
                let id = match values.get(2) {
                    Some(value) if *value != crate::value::ValueRef::Null => value.display(),
                    _ => record.row.to_string(),
                };
                items.push(Item {
                    id,
                    weight: number(0),
                    value: number(1),
                });
            }
            Err(violations) => {
                let violation = &violations[0];
                return Err(DataError::Source {
                    path: path.to_path_buf(),
                    line: record.line,
                    message: format!(
                        "record {}: {} ({})",
                        record.row, violation.message, violation.rule
                    ),
                });
            }
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn items(pairs: &[(f64, f64)]) -> Vec<Item> {
        pairs
            .iter()
            .enumerate()
            .map(|(index, &(weight, value))| Item {
                id: index.to_string(),
                weight,
                value,
            })
            .collect()
    }

    /// Every subset, in Gray-code order (one item flips per step).
    fn brute_force_budget(items: &[Item], budget: f64) -> f64 {
        let mut best = 0.0f64;
        let (mut weight, mut value) = (0.0, 0.0);
        let mut inside = vec![false; items.len()];
        for step in 1u64..(1 << items.len()) {
            let flip = step.trailing_zeros() as usize;
            inside[flip] = !inside[flip];
            let sign = if inside[flip] { 1.0 } else { -1.0 };
            weight += sign * items[flip].weight;
            value += sign * items[flip].value;
            if weight <= budget + 1e-9 {
                best = best.max(value);
            }
        }
        best
    }

    fn brute_force_cover(items: &[Item], required: f64) -> f64 {
        let mut best = f64::INFINITY;
        for mask in 0u64..(1 << items.len()) {
            let (mut cost, mut amount) = (0.0, 0.0);
            for (index, item) in items.iter().enumerate() {
                if mask & (1 << index) != 0 {
                    cost += item.weight;
                    amount += item.value;
                }
            }
            if amount >= required - 1e-9 {
                best = best.min(cost);
            }
        }
        best
    }

    fn check_consistent(selection: &Selection, items: &[Item]) {
        let weight: f64 = selection
            .chosen
            .iter()
            .map(|&index| items[index].weight)
            .sum();
        let value: f64 = selection
            .chosen
            .iter()
            .map(|&index| items[index].value)
            .sum();
        assert!((weight - selection.total_weight).abs() < 1e-6);
        assert!((value - selection.total_value).abs() < 1e-6);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn budget_methods_agree_with_brute_force(
            pairs in proptest::collection::vec((0u32..40, 0u32..60), 1..=14),
            fractional in any::<bool>(),
            budget_share in 0.0f64..1.2,
        ) {
            let scale = if fractional { 0.37 } else { 1.0 };
            let list = items(&pairs.iter().map(|&(weight, value)| (f64::from(weight) * scale, f64::from(value))).collect::<Vec<_>>());
            let total: f64 = list.iter().map(|item| item.weight).sum();
            let budget = (total * budget_share).floor();
            let optimum = brute_force_budget(&list, budget);
            for method in [MethodChoice::Auto, MethodChoice::Exact] {
                let selection = select_within_budget(&list, budget, &SelectOptions { method, ..SelectOptions::default() }).unwrap();
                check_consistent(&selection, &list);
                prop_assert!(selection.exact);
                prop_assert!(selection.total_weight <= budget + 1e-9);
                prop_assert!((selection.total_value - optimum).abs() < 1e-6, "{:?} gave {} want {}", selection.method, selection.total_value, optimum);
            }
            let greedy = select_within_budget(&list, budget, &SelectOptions { method: MethodChoice::Greedy, ..SelectOptions::default() }).unwrap();
            check_consistent(&greedy, &list);
            prop_assert!(greedy.total_weight <= budget + 1e-9);
            prop_assert!(greedy.total_value <= optimum + 1e-6);
            prop_assert!(greedy.bound >= optimum - 1e-6, "bound {} below optimum {}", greedy.bound, optimum);
            prop_assert!(greedy.total_value + greedy.gap >= optimum - 1e-6);
            prop_assert!(2.0 * greedy.total_value >= optimum - 1e-6, "greedy is a 1/2-approximation");
        }

        #[test]
        fn cover_methods_agree_with_brute_force(
            pairs in proptest::collection::vec((0u32..40, 0u32..30), 1..=14),
            required_share in 0.0f64..1.0,
        ) {
            let list = items(&pairs.iter().map(|&(cost, amount)| (f64::from(cost), f64::from(amount))).collect::<Vec<_>>());
            let total: f64 = list.iter().map(|item| item.value).sum();
            let required = (total * required_share).floor();
            let optimum = brute_force_cover(&list, required);
            let selection = select_cover(&list, required, &SelectOptions::default()).unwrap();
            check_consistent(&selection, &list);
            prop_assert!(selection.total_value >= required);
            prop_assert!((selection.total_weight - optimum).abs() < 1e-6);
            let greedy = select_cover(&list, required, &SelectOptions { method: MethodChoice::Greedy, ..SelectOptions::default() }).unwrap();
            prop_assert!(greedy.total_value >= required);
            prop_assert!(greedy.total_weight >= optimum - 1e-6);
            prop_assert!(greedy.bound <= optimum + 1e-6, "lower bound {} above optimum {}", greedy.bound, optimum);
        }
    }

    #[test]
    fn twenty_items_match_brute_force_for_every_method() {
        // A deterministic pseudo-random instance at the brute-force limit.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |modulus: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % modulus) as f64
        };
        let list = items(
            &(0..20)
                .map(|_| (next(97) + 1.0 + next(100) / 100.0, next(200)))
                .collect::<Vec<_>>(),
        );
        let budget = 400.0;
        let optimum = brute_force_budget(&list, budget);
        let exact = select_within_budget(&list, budget, &SelectOptions::default()).unwrap();
        assert_eq!(
            exact.method,
            Method::BranchAndBound,
            "fractional weights use branch and bound"
        );
        assert!((exact.total_value - optimum).abs() < 1e-9);
        let integral: Vec<Item> = list
            .iter()
            .map(|item| Item {
                weight: item.weight.floor(),
                ..item.clone()
            })
            .collect();
        let dp = select_within_budget(&integral, budget, &SelectOptions::default()).unwrap();
        assert_eq!(dp.method, Method::DynamicProgramming);
        assert!((dp.total_value - brute_force_budget(&integral, budget)).abs() < 1e-9);
    }

    #[test]
    fn the_gap_bound_holds_on_large_instances() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |modulus: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % modulus
        };
        // Integral weights so the DP optimum is known exactly.
        let list: Vec<Item> = (0..3000)
            .map(|index| Item {
                id: index.to_string(),
                weight: (next(1000) + 1) as f64,
                value: (next(1000) + 1) as f64,
            })
            .collect();
        let budget = 25_000.0;
        let optimum = select_within_budget(&list, budget, &SelectOptions::default()).unwrap();
        assert_eq!(optimum.method, Method::DynamicProgramming);
        let greedy = select_within_budget(
            &list,
            budget,
            &SelectOptions {
                method: MethodChoice::Greedy,
                ..SelectOptions::default()
            },
        )
        .unwrap();
        assert!(greedy.total_value <= optimum.total_value);
        assert!(greedy.total_value + greedy.gap >= optimum.total_value);
        assert!(greedy.relative_gap() < 0.05, "{}", greedy.relative_gap());

        // A million items: greedy under Auto, with a small proven gap.
        let huge: Vec<Item> = (0..1_000_000)
            .map(|index| Item {
                id: index.to_string(),
                weight: (next(10_000) + 1) as f64 / 7.0,
                value: (next(10_000) + 1) as f64,
            })
            .collect();
        let answer = select_within_budget(&huge, 5.0e6, &SelectOptions::default()).unwrap();
        assert_eq!(answer.method, Method::Greedy);
        assert!(answer.total_weight <= 5.0e6);
        assert!(answer.bound >= answer.total_value);
        let largest = huge.iter().map(|item| item.value).fold(0.0, f64::max);
        assert!(
            answer.gap <= largest,
            "Dantzig: the gap is below one item's value"
        );
    }

    #[test]
    fn bad_inputs_are_named() {
        let list = items(&[(1.0, -2.0)]);
        let error = select_within_budget(&list, 3.0, &SelectOptions::default()).unwrap_err();
        assert!(error.to_string().contains("item 0 value"), "{error}");
        let error =
            select_within_budget(&items(&[(1.0, 1.0)]), f64::NAN, &SelectOptions::default())
                .unwrap_err();
        assert!(error.to_string().contains("budget"));
        let error =
            select_cover(&items(&[(1.0, 1.0)]), 5.0, &SelectOptions::default()).unwrap_err();
        assert!(error.to_string().contains("cannot be covered"));
    }

    #[test]
    fn zero_weight_items_are_free_and_empty_input_selects_nothing() {
        let selection = select_within_budget(
            &items(&[(0.0, 5.0), (3.0, 1.0)]),
            0.0,
            &SelectOptions::default(),
        )
        .unwrap();
        assert_eq!(selection.chosen, [0]);
        assert_eq!(selection.total_value, 5.0);
        let empty = select_within_budget(&[], 10.0, &SelectOptions::default()).unwrap();
        assert!(empty.chosen.is_empty() && empty.exact);
    }
}
