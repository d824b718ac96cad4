using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace Kmem.MemoryGroups;

/// <summary>
/// Per-CPU stock of bytes charged ahead (the kernel's <c>memcg_stock_pcp</c>): each CPU
/// holds up to a few batches charged to one group, so that charges and uncharges of
/// that group on that CPU touch one CPU-local word. A charge for another group, or a
/// stock grown past two batches, gives the surplus back to the counters.
/// </summary>
/// <remarks>
/// A slot is one word, the group id over the byte count, changed by compare-and-swap:
/// user space cannot keep a thread on a CPU, so a slot may be raced by a thread that was
/// moved or preempted; the swap makes that a retry, never a lost byte. Slots sit on
/// their own cache lines.
/// </remarks>
internal static class ChargeStock
{
    /// <summary>Bytes charged ahead at once (MEMCG_CHARGE_BATCH's role).</summary>
    public const long Batch = 64 * 1024;

    private const int IdShift = 40;
    private const long BytesMask = (1L << IdShift) - 1;
    public const int MaxGroupId = (1 << (63 - IdShift)) - 1;

    [StructLayout(LayoutKind.Explicit, Size = 64)]
    private struct Slot
    {
        [FieldOffset(0)] public long Packed;
    }

    private static readonly Slot[] s_slots = new Slot[CpuTopology.PossibleCpus];

    private static long Pack(int id, long bytes) => ((long)id << IdShift) | bytes;

    private static int IdOf(long packed) => (int)(packed >>> IdShift);

    private static long BytesOf(long packed) => packed & BytesMask;

    /// <summary>Takes <paramref name="bytes"/> from this CPU's stock if it holds enough for <paramref name="g"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryConsume(MemoryGroup g, long bytes)
    {
        ref long slot = ref s_slots[CpuTopology.CurrentCpu].Packed;
        long v = Volatile.Read(ref slot);
        return IdOf(v) == g.Id && BytesOf(v) >= bytes
            && Interlocked.CompareExchange(ref slot, v - bytes, v) == v;
    }

    /// <summary>Puts <paramref name="bytes"/> charged to <paramref name="g"/> into this CPU's stock (refill_stock).</summary>
    public static void Refill(MemoryGroup g, long bytes)
    {
        ref long slot = ref s_slots[CpuTopology.CurrentCpu].Packed;
        while (true)
        {
            long v = Volatile.Read(ref slot);
            int id = IdOf(v);
            long total = id == g.Id ? BytesOf(v) + bytes : bytes;
            long keep = total > 2 * Batch ? Batch : total;
            if (Interlocked.CompareExchange(ref slot, Pack(g.Id, keep), v) != v)
                continue;
            if (total > keep)
                g.UnchargeCounters(total - keep);
            if (id != g.Id && BytesOf(v) > 0)
                MemoryGroup.FromId(id).UnchargeCounters(BytesOf(v));
            return;
        }
    }

    /// <summary>Bytes stocked for <paramref name="g"/> or a group below it (counted in its counter, not held by objects).</summary>
    public static long HeldFor(MemoryGroup g)
    {
        long held = 0;
        for (int cpu = 0; cpu < s_slots.Length; cpu++)
        {
            long v = Volatile.Read(ref s_slots[cpu].Packed);
            if (BytesOf(v) > 0 && MemoryGroup.FromId(IdOf(v)).IsSelfOrDescendantOf(g))
                held += BytesOf(v);
        }
        return held;
    }

    /// <summary>Gives every CPU's stock back (drain_all_stock).</summary>
    public static void DrainAll() => Drain(null);

    /// <summary>Gives back the stocks held for <paramref name="only"/> (every stock when null).</summary>
    public static void Drain(MemoryGroup? only)
    {
        for (int cpu = 0; cpu < s_slots.Length; cpu++)
        {
            ref long slot = ref s_slots[cpu].Packed;
            while (true)
            {
                long v = Volatile.Read(ref slot);
                if (BytesOf(v) == 0 || (only != null && IdOf(v) != only.Id))
                    break;
                if (Interlocked.CompareExchange(ref slot, 0, v) != v)
                    continue;
                MemoryGroup.FromId(IdOf(v)).UnchargeCounters(BytesOf(v));
                break;
            }
        }
    }
}
