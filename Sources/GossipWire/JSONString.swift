// One JSON string-literal writer for everything that prints JSON by hand over the wire's text
// (framedump's records, the TriggerGossip reply object): RFC 8259 escapes, control characters
// as \u00XX with lowercase hex, everything else as is.

/// JSON string literals.
public enum JSONString {
    /// `s` as a JSON string literal, quotes included.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                let h = String(u.value, radix: 16)
                out += "\\u00" + (h.count < 2 ? "0" + h : h)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}
