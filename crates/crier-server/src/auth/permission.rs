//! Channel permissions from namespace options, following the decision order
//! of Centrifugo v5/v6 (`internal/client/handler.go`):
//!
//! - **subscribe** without a subscription token: refused for private (`$`)
//!   channels, always, even in insecure mode; allowed when
//!   `allow_subscribe_for_client` is on and the connection has a user (or
//!   `allow_subscribe_for_anonymous` is on too); allowed in insecure mode;
//!   otherwise a subscription token is needed (103). With a token, verify it
//!   with [`crate::auth::TokenVerifier::verify_subscribe`] instead: a valid
//!   token is the permission.
//! - **publish**: `allow_publish_for_client`, or `allow_publish_for_subscriber`
//!   while subscribed; anonymous connections also need
//!   `allow_publish_for_anonymous`; insecure mode allows.
//! - **history** / **presence**: 108 when the feature is off in the
//!   namespace; then as publish with the `history` / `presence` options.
//!
//! Resolving which options apply to a channel (and 102 for an unknown
//! namespace) is [`crate::config::ChannelConfig::options_for`]'s job. This
//! module must never look at tokens or connections itself.

use crate::config::{ChannelOptions, Config};

/// What a connection wants to do in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelAction {
    /// Subscribe without a subscription token.
    Subscribe,
    /// Publish from the client.
    Publish,
    /// Read channel history.
    History,
    /// Read presence or presence stats.
    Presence,
}

/// Who is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester<'a> {
    /// The connection's user; empty for an anonymous connection.
    pub user: &'a str,
    /// Whether the connection is subscribed to the channel (or, during a
    /// subscribe, about to be: Centrifugo counts it as subscribed when it
    /// decides whether the new subscription may push join/leave).
    pub subscribed: bool,
}

/// The answer, with the protocol error it turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Go ahead.
    Allowed,
    /// Refused: protocol error 103 permission denied. For subscribe this
    /// means "a subscription token is required".
    PermissionDenied,
    /// The feature (history, presence) is off here: protocol error 108.
    NotAvailable,
}

impl Permission {
    /// The protocol error code to reply with, or `None` when allowed.
    pub fn error_code(self) -> Option<u32> {
        match self {
            Permission::Allowed => None,
            Permission::PermissionDenied => Some(super::ERROR_PERMISSION_DENIED),
            Permission::NotAvailable => Some(super::ERROR_NOT_AVAILABLE),
        }
    }

    /// Whether the action may proceed.
    pub fn is_allowed(self) -> bool {
        self == Permission::Allowed
    }
}

/// The server-wide inputs to permission checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicy {
    /// `client.insecure`: everything is allowed except token-less
    /// subscriptions to private channels.
    insecure: bool,
    /// `channel.private_prefix`; empty disables private channels.
    private_prefix: String,
}

impl AccessPolicy {
    /// Reads `client.insecure` and `channel.private_prefix`.
    pub fn from_config(config: &Config) -> Self {
        Self {
            insecure: config.client.insecure,
            private_prefix: config.channel.private_prefix.clone(),
        }
    }

    /// Decides `action` on `channel`, whose options are `options`.
    pub fn check(
        &self,
        action: ChannelAction,
        channel: &str,
        options: &ChannelOptions,
        who: Requester<'_>,
    ) -> Permission {
        let authenticated = !who.user.is_empty();
        // The `allow_*_for_client` / `_for_subscriber` / `_for_anonymous`
        // triple, shared by publish, history and presence.
        let grant = |for_client: bool, for_subscriber: bool, for_anonymous: bool| {
            let identity_ok = authenticated || for_anonymous;
            if (for_client || (for_subscriber && who.subscribed)) && identity_ok || self.insecure {
                Permission::Allowed
            } else {
                Permission::PermissionDenied
            }
        };
        match action {
            ChannelAction::Subscribe => {
                if crier_core::ChannelNames::private(channel, &self.private_prefix) {
                    Permission::PermissionDenied
                } else if options.allow_subscribe_for_client
                    && (authenticated || options.allow_subscribe_for_anonymous)
                    || self.insecure
                {
                    Permission::Allowed
                } else {
                    Permission::PermissionDenied
                }
            }
            ChannelAction::Publish => grant(
                options.allow_publish_for_client,
                options.allow_publish_for_subscriber,
                options.allow_publish_for_anonymous,
            ),
            ChannelAction::History if !options.history_enabled() => Permission::NotAvailable,
            ChannelAction::History => grant(
                options.allow_history_for_client,
                options.allow_history_for_subscriber,
                options.allow_history_for_anonymous,
            ),
            ChannelAction::Presence if !options.presence => Permission::NotAvailable,
            ChannelAction::Presence => grant(
                options.allow_presence_for_client,
                options.allow_presence_for_subscriber,
                options.allow_presence_for_anonymous,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const USER: Requester<'static> = Requester {
        user: "42",
        subscribed: false,
    };
    const ANON: Requester<'static> = Requester {
        user: "",
        subscribed: false,
    };

    fn policy(insecure: bool) -> AccessPolicy {
        let mut config = Config::default();
        config.client.insecure = insecure;
        AccessPolicy::from_config(&config)
    }

    fn subscribed(r: Requester<'static>) -> Requester<'static> {
        Requester {
            subscribed: true,
            ..r
        }
    }

    #[test]
    fn subscribe_needs_a_token_by_default() {
        let p = policy(false);
        let o = ChannelOptions::default();
        assert_eq!(
            p.check(ChannelAction::Subscribe, "news", &o, USER),
            Permission::PermissionDenied
        );
        assert_eq!(Permission::PermissionDenied.error_code(), Some(103));
    }

    #[test]
    fn allow_subscribe_for_client_opens_the_namespace_to_users_only() {
        let p = policy(false);
        let o = ChannelOptions {
            allow_subscribe_for_client: true,
            ..Default::default()
        };
        assert!(p.check(ChannelAction::Subscribe, "news", &o, USER).is_allowed());
        assert!(!p.check(ChannelAction::Subscribe, "news", &o, ANON).is_allowed());
        let o = ChannelOptions {
            allow_subscribe_for_anonymous: true,
            ..o
        };
        assert!(p.check(ChannelAction::Subscribe, "news", &o, ANON).is_allowed());
        // allow_subscribe_for_anonymous alone opens nothing.
        let o = ChannelOptions {
            allow_subscribe_for_anonymous: true,
            ..Default::default()
        };
        assert!(!p.check(ChannelAction::Subscribe, "news", &o, ANON).is_allowed());
    }

    #[test]
    fn private_channels_always_need_a_token() {
        let o = ChannelOptions {
            allow_subscribe_for_client: true,
            allow_subscribe_for_anonymous: true,
            ..Default::default()
        };
        for insecure in [false, true] {
            assert_eq!(
                policy(insecure).check(ChannelAction::Subscribe, "$secret", &o, USER),
                Permission::PermissionDenied
            );
        }
        // With the prefix disabled, `$` is an ordinary character.
        let mut config = Config::default();
        config.channel.private_prefix.clear();
        let p = AccessPolicy::from_config(&config);
        assert!(p
            .check(ChannelAction::Subscribe, "$secret", &o, USER)
            .is_allowed());
    }

    #[test]
    fn insecure_mode_allows_everything_else() {
        let p = policy(true);
        let o = ChannelOptions {
            presence: true,
            history_size: 10,
            history_ttl: Duration::from_secs(60),
            ..Default::default()
        };
        for action in [
            ChannelAction::Subscribe,
            ChannelAction::Publish,
            ChannelAction::History,
            ChannelAction::Presence,
        ] {
            assert!(p.check(action, "news", &o, ANON).is_allowed(), "{action:?}");
        }
    }

    #[test]
    fn publish_permissions() {
        let p = policy(false);
        let none = ChannelOptions::default();
        assert!(!p
            .check(ChannelAction::Publish, "c", &none, subscribed(USER))
            .is_allowed());

        let for_subscriber = ChannelOptions {
            allow_publish_for_subscriber: true,
            ..Default::default()
        };
        assert!(!p
            .check(ChannelAction::Publish, "c", &for_subscriber, USER)
            .is_allowed());
        assert!(p
            .check(ChannelAction::Publish, "c", &for_subscriber, subscribed(USER))
            .is_allowed());
        assert!(!p
            .check(ChannelAction::Publish, "c", &for_subscriber, subscribed(ANON))
            .is_allowed());

        let for_client = ChannelOptions {
            allow_publish_for_client: true,
            ..Default::default()
        };
        assert!(p
            .check(ChannelAction::Publish, "c", &for_client, USER)
            .is_allowed());
        assert!(!p
            .check(ChannelAction::Publish, "c", &for_client, ANON)
            .is_allowed());
        let anon_too = ChannelOptions {
            allow_publish_for_anonymous: true,
            ..for_client
        };
        assert!(p.check(ChannelAction::Publish, "c", &anon_too, ANON).is_allowed());
    }

    #[test]
    fn history_and_presence_must_be_enabled_first() {
        let p = policy(false);
        let o = ChannelOptions {
            allow_history_for_client: true,
            allow_presence_for_client: true,
            ..Default::default()
        };
        assert_eq!(
            p.check(ChannelAction::History, "c", &o, USER),
            Permission::NotAvailable
        );
        assert_eq!(
            p.check(ChannelAction::Presence, "c", &o, USER),
            Permission::NotAvailable
        );
        assert_eq!(Permission::NotAvailable.error_code(), Some(108));

        let on = ChannelOptions {
            presence: true,
            history_size: 5,
            history_ttl: Duration::from_secs(30),
            ..o
        };
        assert!(p.check(ChannelAction::History, "c", &on, USER).is_allowed());
        assert!(p.check(ChannelAction::Presence, "c", &on, USER).is_allowed());
        assert!(!p.check(ChannelAction::History, "c", &on, ANON).is_allowed());
    }

    #[test]
    fn subscriber_only_history_and_presence() {
        let p = policy(false);
        let o = ChannelOptions {
            presence: true,
            history_size: 5,
            history_ttl: Duration::from_secs(30),
            allow_history_for_subscriber: true,
            allow_presence_for_subscriber: true,
            ..Default::default()
        };
        assert!(!p.check(ChannelAction::History, "c", &o, USER).is_allowed());
        assert!(p
            .check(ChannelAction::History, "c", &o, subscribed(USER))
            .is_allowed());
        assert!(!p.check(ChannelAction::Presence, "c", &o, USER).is_allowed());
        assert!(p
            .check(ChannelAction::Presence, "c", &o, subscribed(USER))
            .is_allowed());
    }
}
