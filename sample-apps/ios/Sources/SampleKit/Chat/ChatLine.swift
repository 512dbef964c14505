// What the chat tells its user, as values: the app turns them into bubbles, marks and
// system lines; `describe()` is the console chat's wording. Every line names the contact
// it is about.

import Foundation

/// Something the user should see.
public enum ChatLine: Equatable, Sendable {
    /// Listening as `me` (`NAME#FINGERPRINT`, what others add as a contact).
    case ready(me: String)
    /// A message of an earlier run, shown again from the history file.
    case earlier(contact: String, message: Message, delivered: Bool)
    /// Our message is on disk and on its way.
    case sent(contact: String, message: Message)
    /// The peer's app stored our message `seq`.
    case delivered(contact: String, seq: Int64)
    /// A new message of the peer's (shown once: a resend is recognised and dropped).
    case received(contact: String, message: Message)
    /// A flow to `contact` is ready (`dialed`: we opened it) on `paths`.
    case online(contact: String, flowId: String, dialed: Bool, paths: [String])
    /// No flow to `contact` is left.
    case offline(contact: String, why: String)
    /// A path joined the flow: like "wifi 192.168.1.2:40312 -> 172.16.100.11:443 relayed".
    case pathAdded(contact: String, path: String)
    case pathLost(contact: String, path: String, why: String)
    /// The peer moved to `addresses`.
    case peerMoved(contact: String, addresses: [String])
    /// This device moved to `addresses`.
    case moved(contact: String, addresses: [String])
    /// Data flows again after an outage of `outageMs`.
    case resumed(contact: String, outageMs: Int64)
    /// Hole punching failed: the flow stays relayed.
    case staysRelayed(contact: String, attempts: UInt32)
    /// A new contact, pinned on first contact.
    case pinned(contact: Contact)
    /// A flow refused (a key that does not match the pin, ...).
    case refused(why: String)
    /// Something went wrong that the user should know of (and what happens next).
    case problem(contact: String?, what: String)

    /// The contact the line is about, if any.
    public var contact: String? {
        switch self {
        case .ready, .refused: return nil
        case let .earlier(c, _, _), let .sent(c, _), let .delivered(c, _), let .received(c, _), let .online(c, _, _, _),
             let .offline(c, _), let .pathAdded(c, _), let .pathLost(c, _, _), let .peerMoved(c, _), let .moved(c, _),
             let .resumed(c, _), let .staysRelayed(c, _):
            return c
        case let .pinned(c): return c.name
        case let .problem(c, _): return c
        }
    }

    /// The line as the console prints it: a fixed word, the contact, then details.
    public func describe() -> String {
        switch self {
        case let .ready(me): return "ready     \(me)"
        case let .earlier(contact, m, delivered):
            let state = m.outgoing ? (delivered ? " delivered" : " pending") : ""
            return "earlier   \(contact) \(m.outgoing ? "out" : "in") #\(m.seq)\(state) \(ChatLine.printable(m.text))"
        case let .sent(contact, m): return "sent      \(contact) #\(m.seq) \(ChatLine.printable(m.text))"
        case let .delivered(contact, seq): return "delivered \(contact) #\(seq)"
        case let .received(contact, m): return "received  \(contact) #\(m.seq) \(ChatLine.printable(m.text))"
        case let .online(contact, flowId, dialed, paths):
            let via = paths.isEmpty ? "no path yet" : paths.joined(separator: ", ")
            return "online    \(contact) flow \(flowId) \(dialed ? "(we dialed)" : "(they dialed)") via \(via)"
        case let .offline(contact, why): return "offline   \(contact): \(why)"
        case let .pathAdded(contact, path): return "path+     \(contact) \(path)"
        case let .pathLost(contact, path, why): return "path-     \(contact) \(path): \(why)"
        case let .peerMoved(contact, addresses): return "moved     \(contact) peer now at \(addresses.joined(separator: ", "))"
        case let .moved(contact, addresses): return "moved     \(contact) we are now at \(addresses.joined(separator: ", "))"
        case let .resumed(contact, outageMs): return "resumed   \(contact) after \(fixed(Double(outageMs) / 1000, 1)) s without a path"
        case let .staysRelayed(contact, attempts): return "relayed   \(contact) no direct path after \(attempts) attempts; staying relayed"
        case let .pinned(contact): return "contact   \(contact.name)#\(contact.fingerprint) pinned on first contact"
        case let .refused(why): return "refused   \(why)"
        case let .problem(contact, what): return "problem   \(contact.map { "\($0) " } ?? "")\(what)"
        }
    }

    /// Control characters a peer sent are shown, not obeyed.
    public static func printable(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for s in text.unicodeScalars { out.append(s.value < 0x20 || s.value == 0x7f ? "\u{FFFD}" : s) }
        return String(out)
    }
}
