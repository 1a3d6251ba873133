// The stranger's check: tools/spec_peer.py, a client written from Protocol/SPEC.md alone (not
// from our sources), checks its codec against every golden vector, then starts the debug
// gossipd (a bootstrap and a peer on OS-picked ports), exchanges with it in F32, BF16 and I8
// (bit-identical averages on both sides, SPEC 5.3 and 6.5) and sends it hostile frames and
// bodies (SPEC 2, 4, 5, 7, 8.1, 9, 10). Skips with a message where python3 or numpy is missing.
import Foundation
import Testing

/// A python3 that has numpy, as (executable, leading arguments): $PYTHON when it has numpy (CI
/// points it at a venv that may lack it), else python3 on PATH; nil, with the reason printed.
private func strangerPython() -> (String, [String])? {
    var candidates: [(String, [String])] = []
    if let p = ProcessInfo.processInfo.environment["PYTHON"] { candidates.append((p, [])) }
    candidates.append(("/usr/bin/env", ["python3"]))
    for (exe, lead) in candidates {
        if let (code, _, _) = try? Cluster.run(exe, lead + ["-c", "import numpy"], timeout: 60), code == 0 {
            return (exe, lead)
        }
    }
    print("SpecStrangerTests: skipped: no python3 with numpy (tried $PYTHON and python3 on PATH); install numpy to run tools/spec_peer.py")
    return nil
}

@Suite(.serialized)
struct SpecStrangerTests {
    /// tools/spec_peer.py against the debug binaries: it must print `spec_peer: OK` and exit 0;
    /// otherwise its last line names the first mismatch and the SPEC section.
    @Test func independentPeerAgreesWithTheNode() throws {
        guard let (python, lead) = strangerPython() else { return }
        let args = lead + [Cluster.repoRoot + "/tools/spec_peer.py", "--bin", Cluster.binDir]
        let (code, out, err) = try Cluster.run(python, args, timeout: 120)
        print(out.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(code == 0 && out.contains("spec_peer: OK"),
                "tools/spec_peer.py exited \(code):\n\(out.suffix(3000))\n\(err.suffix(3000))")
    }
}
