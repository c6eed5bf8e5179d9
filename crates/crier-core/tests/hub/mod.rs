mod basic;
mod concurrency;
mod history_props;
mod slow;
mod support;
