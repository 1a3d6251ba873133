// Status codes carried by error replies. The numbering is gRPC's (0 OK ... 16 UNAUTHENTICATED),
// then our own from 17 (MODEL_REJECTED), append-only; see Protocol/SPEC.md §8.

/// A wire status code: 0-16 numbered exactly as gRPC's status codes, 17 and up our own.
public enum StatusCode: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case ok = 0
    case cancelled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16
    /// The receiver refused an exchanged model as an outlier: too far from its own (SPEC §5.3).
    case modelRejected = 17

    /// The canonical upper-case name, as gRPC spells it (`DEADLINE_EXCEEDED`).
    public var name: String {
        switch self {
        case .ok: "OK"
        case .cancelled: "CANCELLED"
        case .unknown: "UNKNOWN"
        case .invalidArgument: "INVALID_ARGUMENT"
        case .deadlineExceeded: "DEADLINE_EXCEEDED"
        case .notFound: "NOT_FOUND"
        case .alreadyExists: "ALREADY_EXISTS"
        case .permissionDenied: "PERMISSION_DENIED"
        case .resourceExhausted: "RESOURCE_EXHAUSTED"
        case .failedPrecondition: "FAILED_PRECONDITION"
        case .aborted: "ABORTED"
        case .outOfRange: "OUT_OF_RANGE"
        case .unimplemented: "UNIMPLEMENTED"
        case .internal: "INTERNAL"
        case .unavailable: "UNAVAILABLE"
        case .dataLoss: "DATA_LOSS"
        case .unauthenticated: "UNAUTHENTICATED"
        case .modelRejected: "MODEL_REJECTED"
        }
    }

    public var description: String { "\(name) (\(rawValue))" }

    /// Maps any number to a code; numbers this version does not know become `.unknown`.
    public init(wireValue: UInt32) { self = StatusCode(rawValue: wireValue) ?? .unknown }
}
