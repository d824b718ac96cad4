using System.Runtime.InteropServices;

namespace Kmem;

/// <summary>
/// One thread's read-side state, in its own cache line of native memory (liburcu's
/// <c>rcu_reader</c>). Only the owner writes it; writers read <see cref="Snapshot"/>.
/// </summary>
/// <remarks>
/// Invariant: <see cref="Snapshot"/> is 0 exactly when <see cref="Nesting"/> is 0 (as far
/// as the owner's program order goes); otherwise it is the grace-period sequence number
/// read when the outermost section began. A writer waiting for grace period G waits only
/// for readers whose snapshot is non-zero and below G: a section that began after G
/// started is not its business, so a reader that enters and leaves sections without pause
/// cannot starve it.
/// </remarks>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct RcuReader
{
    /// <summary>Grace-period number at the outermost ReadLock; 0 outside any section.</summary>
    public long Snapshot;

    /// <summary>Read-side nesting depth; the owner's alone.</summary>
    public int Nesting;
}

/// <summary>
/// The calling thread's <see cref="RcuReader"/>, as a pointer in a class with no static
/// constructor and no reference-type thread statics: the JIT then reads it with the
/// inlined TLS sequence (see ThreadSlotId).
/// </summary>
internal static class RcuThread
{
    [ThreadStatic] internal static nint Reader;
}

/// <summary>A registered reader: its record and the thread that owns it (to notice the thread's exit).</summary>
internal sealed unsafe class RcuReaderEntry(RcuReader* record, Thread thread)
{
    public RcuReader* Record { get; } = record;

    public Thread Thread { get; } = thread;
}
