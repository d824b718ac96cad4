using System.Runtime.InteropServices;

namespace Kmem;

/// <summary>
/// One thread's read-side state, in its own cache line of native memory (liburcu's
/// <c>rcu_reader</c>). Only the owner writes it; writers read <see cref="Ctr"/>.
/// </summary>
/// <remarks>
/// <see cref="Ctr"/> packs, as liburcu's reader counter does, the nesting depth (low
/// <see cref="NestBits"/> bits) and the grace-period sequence number read when the
/// outermost section began (the rest). Nest bits 0: outside any section. A writer waiting
/// for grace period G waits only for readers with nest bits set and a sequence below G: a
/// section that began after G started is not its business, so a reader that enters and
/// leaves sections without pause cannot starve it.
/// </remarks>
[StructLayout(LayoutKind.Sequential, Size = 64)]
internal struct RcuReader
{
    public const int NestBits = 16;
    public const long NestMask = (1L << NestBits) - 1;

    public long Ctr;

    public static bool InSection(long ctr) => (ctr & NestMask) != 0;

    public static long SequenceOf(long ctr) => ctr >> NestBits;
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
