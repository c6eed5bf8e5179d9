mod basic;
mod concurrency;
mod history_props;
mod observer;
mod remote;
mod slow;
mod support;
