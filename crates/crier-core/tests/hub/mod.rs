mod basic;
mod concurrency;
mod history_props;
mod remote;
mod slow;
mod support;
