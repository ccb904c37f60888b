//! MQTT 5 reason codes: the byte on the wire and the name the log, the window and the packet
//! trace show for it (OASIS MQTT 5.0, section 2.4).

/// One reason code. The same byte means different things in different packets only for 0x00
/// (success, normal disconnection, granted QoS 0), so one type serves them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Reason(pub u8);

impl Reason {
    pub const SUCCESS: Reason = Reason(0x00);
    pub const DISCONNECT_WITH_WILL: Reason = Reason(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: Reason = Reason(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: Reason = Reason(0x11);
    pub const UNSPECIFIED: Reason = Reason(0x80);
    pub const MALFORMED_PACKET: Reason = Reason(0x81);
    pub const PROTOCOL_ERROR: Reason = Reason(0x82);
    pub const IMPLEMENTATION_SPECIFIC: Reason = Reason(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: Reason = Reason(0x84);
    pub const CLIENT_ID_NOT_VALID: Reason = Reason(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: Reason = Reason(0x86);
    pub const NOT_AUTHORIZED: Reason = Reason(0x87);
    pub const SERVER_UNAVAILABLE: Reason = Reason(0x88);
    pub const SERVER_BUSY: Reason = Reason(0x89);
    pub const SERVER_SHUTTING_DOWN: Reason = Reason(0x8B);
    pub const BAD_AUTHENTICATION_METHOD: Reason = Reason(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: Reason = Reason(0x8D);
    pub const SESSION_TAKEN_OVER: Reason = Reason(0x8E);
    pub const TOPIC_FILTER_INVALID: Reason = Reason(0x8F);
    pub const TOPIC_NAME_INVALID: Reason = Reason(0x90);
    pub const PACKET_ID_NOT_FOUND: Reason = Reason(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: Reason = Reason(0x93);
    pub const TOPIC_ALIAS_INVALID: Reason = Reason(0x94);
    pub const PACKET_TOO_LARGE: Reason = Reason(0x95);
    pub const QUOTA_EXCEEDED: Reason = Reason(0x97);
    pub const ADMINISTRATIVE_ACTION: Reason = Reason(0x98);
    pub const PAYLOAD_FORMAT_INVALID: Reason = Reason(0x99);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Reason = Reason(0x9E);
    pub const SUBSCRIPTION_IDS_NOT_SUPPORTED: Reason = Reason(0xA1);
    pub const WILDCARDS_NOT_SUPPORTED: Reason = Reason(0xA2);

    /// 0x80 and up: the request failed.
    pub fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// The spec's name for the code.
    pub fn name(self) -> &'static str {
        match self.0 {
            0x00 => "Success",
            0x01 => "Granted QoS 1",
            0x02 => "Granted QoS 2",
            0x04 => "Disconnect with Will Message",
            0x10 => "No matching subscribers",
            0x11 => "No subscription existed",
            0x18 => "Continue authentication",
            0x19 => "Re-authenticate",
            0x80 => "Unspecified error",
            0x81 => "Malformed Packet",
            0x82 => "Protocol Error",
            0x83 => "Implementation specific error",
            0x84 => "Unsupported Protocol Version",
            0x85 => "Client Identifier not valid",
            0x86 => "Bad User Name or Password",
            0x87 => "Not authorized",
            0x88 => "Server unavailable",
            0x89 => "Server busy",
            0x8A => "Banned",
            0x8B => "Server shutting down",
            0x8C => "Bad authentication method",
            0x8D => "Keep Alive timeout",
            0x8E => "Session taken over",
            0x8F => "Topic Filter invalid",
            0x90 => "Topic Name invalid",
            0x91 => "Packet Identifier in use",
            0x92 => "Packet Identifier not found",
            0x93 => "Receive Maximum exceeded",
            0x94 => "Topic Alias invalid",
            0x95 => "Packet too large",
            0x96 => "Message rate too high",
            0x97 => "Quota exceeded",
            0x98 => "Administrative action",
            0x99 => "Payload format invalid",
            0x9A => "Retain not supported",
            0x9B => "QoS not supported",
            0x9C => "Use another server",
            0x9D => "Server moved",
            0x9E => "Shared Subscriptions not supported",
            0x9F => "Connection rate exceeded",
            0xA0 => "Maximum connect time",
            0xA1 => "Subscription Identifiers not supported",
            0xA2 => "Wildcard Subscriptions not supported",
            _ => "unknown reason code",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#04x} {}", self.0, self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec() {
        assert_eq!(
            Reason::SESSION_TAKEN_OVER.to_string(),
            "0x8e Session taken over"
        );
        assert_eq!(
            Reason::ADMINISTRATIVE_ACTION.name(),
            "Administrative action"
        );
        assert!(Reason::NOT_AUTHORIZED.is_error());
        assert!(!Reason::NO_MATCHING_SUBSCRIBERS.is_error());
    }
}
