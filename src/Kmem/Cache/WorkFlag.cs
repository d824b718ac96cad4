namespace Kmem;

/// <summary>
/// "Maybe there is work": set by producers after they publish an item, cleared by a
/// consumer before it takes the items, so a producer writes the shared line only when
/// it finds it clear (once per consumer pass, not once per item), and no item is ever
/// left behind with the flag clear.
/// </summary>
/// <remarks>
/// The order (docs/design.md, "Allocation that never waits"): a producer's publication
/// is a full fence (P1, a CAS), then it reads the flag (P2) and sets it if clear (P3); a
/// consumer clears it (C1), runs a full fence (C2), then takes the items (C3). If P2 read
/// the flag set, C1 follows P2 in the flag's order and, with the fences on both sides, C3
/// sees P1's item; if P2 read it clear, P3 sets it and the next consumer takes the item.
/// Taking before clearing (the known-buggy order) strands an item published between the
/// take and the clear: <c>WorkFlagLitmusTests</c> catches that.
/// </remarks>
internal sealed class WorkFlag
{
    /// <summary>The flag sits mid-way in 128 bytes of its own, so no neighbour shares its line.</summary>
    private readonly int[] _line = new int[32];

    private ref int Flag => ref _line[16];

    /// <summary>True when work may be waiting: one read of a line producers rarely write.</summary>
    public bool IsSet => Volatile.Read(ref Flag) != 0;

    /// <summary>P2, P3: after a full-fence publication, says there is work (writes only when clear).</summary>
    public void Announce()
    {
        if (Volatile.Read(ref Flag) == 0)
            Volatile.Write(ref Flag, 1);
    }

    /// <summary>C1, C2: false when no work was announced; else clears the flag, fences, and the caller takes the items (C3).</summary>
    public bool TryBeginConsume()
    {
        if (Volatile.Read(ref Flag) == 0)
            return false;
        Volatile.Write(ref Flag, 0);
        Interlocked.MemoryBarrier();
        return true;
    }
}
