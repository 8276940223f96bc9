//! Proxy-DHCP: boot information only, beside the site's DHCP server, which gives addresses.

use dhcproto::v4::MessageType;

use super::{
    reply,
    request::{Request, RequestType},
    wire::DHCP_SERVER_PORT,
    Context, Ignored, Outcome,
};

/// Answers `req`: an OFFER (no address) to a PXE, HTTP Boot or iPXE DISCOVER on port 67, an ACK
/// to a boot-server DHCPREQUEST (or INFORM) on port 4011. Everything else is left to the site's
/// DHCP server.
pub fn respond(req: &Request<'_>, ctx: &Context<'_>) -> Outcome {
    let Context {
        policy,
        server,
        src,
        local_port,
        ..
    } = *ctx;
    let Some(spec) = policy.decide(&req.machine, server) else {
        return Outcome::Ignored(Ignored::NotPxe);
    };
    let kind = match (local_port, req.kind) {
        (DHCP_SERVER_PORT, RequestType::Discover) => MessageType::Offer,
        (DHCP_SERVER_PORT, _) => return Outcome::Ignored(Ignored::NotForProxy),
        (_, RequestType::Request | RequestType::Inform) => MessageType::Ack,
        (_, _) => return Outcome::Ignored(Ignored::NotForProxy),
    };
    let mut m = reply::base_reply(req, kind, server);
    reply::add_boot(&mut m, req, &spec, server, true);
    let to = reply::destination(req, src, local_port);
    Outcome::Reply(reply::finish(&m, to), None)
}
