/*
 * Locks, outermost first (mm/percpu.c):
 *   pcpu_alloc_mutex   KLock, one per allocator: serialises every allocation and the
 *                      balance work that adds and frees chunks. Taken with no other Kmem
 *                      lock held (slab constructors run with none).
 *   pcpu_lock          LeafSpinLock: the chunk list and every area map. All that Free
 *                      takes, so a slab destructor (leaf locks only) may free per-CPU memory.
 * Under the mutex the page layer may take page_zone; never under pcpu_lock.
 */

using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Numerics;
using System.Runtime.InteropServices;
using Kmem.Locking;
using Kmem.PageLayer;
using Kmem.PerCpu;

namespace Kmem;

/// <summary>
/// The per-CPU memory allocator (mm/percpu.c): areas with one copy per possible CPU,
/// carved from chunks that hold one unit per CPU. Every allocation takes the global
/// <c>pcpu_alloc_mutex</c> (the serialisation point the seed series routes around with
/// slab constructors and destructors); a free takes only the leaf <c>pcpu_lock</c>.
/// Every area comes back zeroed in every unit.
/// </summary>
/// <remarks>
/// Fully free chunks beyond one are returned to the page layer by the balance work
/// (<c>pcpu_balance_workfn</c>), which the reclaim thread runs after a free leaves a
/// second chunk empty, or <see cref="Balance"/> runs now.
/// </remarks>
public sealed unsafe class PerCpuAllocator : IDisposable
{
    /// <summary>Bytes of one CPU's unit in a chunk, and the largest area (PCPU_MIN_UNIT_SIZE).</summary>
    public const int UnitSize = 32 * 1024;

    /// <summary>Allocation granule (PCPU_MIN_ALLOC_SIZE): sizes round up to it.</summary>
    public const int MinAllocSize = PerCpuChunk.Granule;

    /// <summary>Every chunk of every allocator, by address, for lookups that take no lock.</summary>
    private static PerCpuChunk[] s_chunks = [];

    private readonly KLock _allocMutex = new("pcpu_alloc_mutex");
    private readonly LeafSpinLock _lock = new("pcpu_lock");
    /// <summary>Under pcpu_lock (changed under both locks): this allocator's live chunks.</summary>
    private readonly List<PerCpuChunk> _chunks = [];
    private int _needBalance;
    private bool _disposed;

    private long _allocations;
    private long _frees;
    private long _failedAllocations;
    private long _chunksCreated;
    private long _chunksFreed;
    private long _bytesInUse;

    private static readonly Lazy<PerCpuAllocator> s_shared = new(() => new PerCpuAllocator("percpu"));
    private static PerCpuAllocator[] s_live = [];

    /// <summary>The process's per-CPU allocator (the kernel has exactly one).</summary>
    public static PerCpuAllocator Shared => s_shared.Value;

    /// <summary>A separate allocator, with its own chunks and its own pcpu_alloc_mutex (tests and experiments).</summary>
    public PerCpuAllocator(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        Name = name;
        UpdateCopy(ref s_live, a => [.. a, this]);
        Kmem.Reclaim.EnsureStarted();
        Diagnostics.KmemMetrics.Activate();
    }

    /// <summary>The allocators not disposed (copy-on-write, read without a lock: for metrics).</summary>
    internal static PerCpuAllocator[] Live => Volatile.Read(ref s_live);

    /// <summary>True once <see cref="Dispose"/> freed its chunks (racy read, for metrics).</summary>
    internal bool IsDisposed => Volatile.Read(ref _disposed);

    /// <summary>The name given at creation; it names the allocator in errors and statistics (<c>kmem.percpu.allocator.name</c>).</summary>
    public string Name { get; }

    /// <summary>Copies per area: <see cref="CpuTopology.PossibleCpus"/>.</summary>
    public static int Units => CpuTopology.PossibleCpus;

    /// <summary>The global allocation mutex (for its <see cref="NamedLock.GetStatistics"/>).</summary>
    public NamedLock AllocMutex => _allocMutex;

    /// <summary>The leaf lock of the area maps.</summary>
    public NamedLock AreaLock => _lock;

    /// <summary>
    /// An area for one <typeparamref name="T"/> per CPU (or <paramref name="count"/> of them),
    /// zeroed on every CPU, aligned to the size of <typeparamref name="T"/> up to 64 bytes.
    /// </summary>
    /// <param name="count">Elements per CPU.</param>
    /// <param name="account">Charge the area (size × CPUs) to the current <see cref="MemoryGroup"/> (GFP_ACCOUNT).</param>
    /// <exception cref="SlabAllocationException">No memory, or the group's limit.</exception>
    [SuppressMessage("ApiDesign", "RS0026:Do not add multiple public overloads with optional parameters",
        Justification = "Alloc<T>(count) and Alloc(size, align) differ in generic arity and required parameters: no call binds to both.")]
    public PerCpuPtr<T> Alloc<T>(int count = 1, bool account = false) where T : unmanaged
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        int size = checked(sizeof(T) * count);
        return Alloc(size, NaturalAlign(sizeof(T)), account).Cast<T>();
    }

    /// <summary>An area of <paramref name="size"/> bytes per CPU, aligned to <paramref name="align"/>, zeroed on every CPU.</summary>
    /// <exception cref="SlabAllocationException">No memory, or the group's limit.</exception>
    [SuppressMessage("ApiDesign", "RS0026:Do not add multiple public overloads with optional parameters",
        Justification = "See Alloc<T>: the two overloads cannot be confused.")]
    public PerCpuPtr<byte> Alloc(int size, int align, bool account = false)
    {
        if (!TryAlloc(size, align, out PerCpuPtr<byte> area, out AllocationFailure failure, out string? detail, account))
            throw new SlabAllocationException(Name, failure, (nuint)size, detail ?? "");
        return area;
    }

    /// <summary>As <see cref="Alloc(int, int, bool)"/>; false instead of an exception when memory or the group's limit refuses.</summary>
    public bool TryAlloc(int size, int align, out PerCpuPtr<byte> area, bool account = false) =>
        TryAlloc(size, align, out area, out _, out _, account);

    private bool TryAlloc(int size, int align, out PerCpuPtr<byte> area, out AllocationFailure failure, out string? detail, bool account)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(size, UnitSize);
        if (align < 1 || !BitOperations.IsPow2(align) || align > OsMemory.PageSize)
            throw new ArgumentOutOfRangeException(nameof(align), align, $"per-CPU allocator '{Name}': alignment must be a power of two up to {OsMemory.PageSize}");
        ObjectDisposedException.ThrowIf(_disposed, this);
        area = default;
        int bits = (size + MinAllocSize - 1) / MinAllocSize;
        int alignBits = Math.Max(1, align / MinAllocSize);
        long fullSize = (long)bits * MinAllocSize * Units;

        // Charge first (pcpu_memcg_pre_alloc_hook), so a group at its limit fails before the mutex.
        MemoryGroup? group = account ? MemoryGroup.Current?.Online() : null;
        if (group == MemoryGroup.Root)
            group = null;
        if (group != null && !group.TryCharge(fullSize, out MemoryGroup? refusedBy))
        {
            Interlocked.Increment(ref _failedAllocations);
            failure = AllocationFailure.GroupLimit;
            detail = $"memory group '{refusedBy!.Name}' would pass its limit of {refusedBy.Limit} bytes";
            return false;
        }

        PerCpuChunk? chunk;
        int bit;
        _allocMutex.Enter();
        try
        {
            (chunk, bit) = AllocateArea(bits, alignBits, out failure);
        }
        finally
        {
            _allocMutex.Exit();
        }
        if (chunk == null)
        {
            group?.Uncharge(fullSize);
            Interlocked.Increment(ref _failedAllocations);
            detail = $"per-CPU chunk of {ChunkBytes} bytes refused: {failure}";
            return false;
        }

        // Zero the area in every unit, outside both locks (pcpu_alloc's memset loop).
        byte* unit0 = chunk.Base + bit * MinAllocSize;
        for (int cpu = 0; cpu < Units; cpu++)
            NativeMemory.Clear(unit0 + (nint)cpu * UnitSize, (nuint)(bits * MinAllocSize));
        if (group != null)
            chunk.ChargeRecord(bit) = PerCpuChunk.PackCharge(group.Id, fullSize);
        Interlocked.Increment(ref _allocations);
        Interlocked.Add(ref _bytesInUse, bits * MinAllocSize);
        area = new PerCpuPtr<byte>((nint)unit0);
        failure = default;
        detail = null;
        return true;
    }

    /// <summary>Under pcpu_alloc_mutex: first fit over the chunks, else a new chunk.</summary>
    private (PerCpuChunk?, int) AllocateArea(int bits, int alignBits, out AllocationFailure failure)
    {
        failure = default;
        _lock.Enter();
        try
        {
            foreach (PerCpuChunk c in _chunks)
            {
                int bit = c.TryAllocate(bits, alignBits);
                if (bit >= 0)
                    return (c, bit);
            }
        }
        finally
        {
            _lock.Exit();
        }

        // No room: a new chunk from the page layer, mapped with only the mutex held.
        byte* block = (byte*)Pages.AllocBlock(ChunkBytes, OsMemory.PageSize, out Pages.Refusal refusal, out _);
        if (block == null)
        {
            failure = Pages.ToFailure(refusal);
            return (null, -1);
        }
        var chunk = new PerCpuChunk(this, block, ChunkBytes);
        UpdateCopy(ref s_chunks, a => [.. a.Take(FindInsertionIndex(a, (nint)chunk.Base)), chunk, .. a.Skip(FindInsertionIndex(a, (nint)chunk.Base))]);
        Interlocked.Increment(ref _chunksCreated);
        _lock.Enter();
        try
        {
            _chunks.Add(chunk);
            int bit = chunk.TryAllocate(bits, alignBits);
            Debug.Assert(bit >= 0, "a new chunk refused an area that fits a unit");
            return (chunk, bit);
        }
        finally
        {
            _lock.Exit();
        }
    }

    private static nuint ChunkBytes => (nuint)UnitSize * (nuint)Units;

    /// <summary>
    /// Frees an area of this allocator. Takes only the leaf pcpu_lock (never the mutex),
    /// so it may run inside a slab destructor. An accounted or charged area is uncharged.
    /// </summary>
    /// <exception cref="SlabUsageException">Not an area of this allocator, not its start, or already freed.</exception>
    public void Free<T>(PerCpuPtr<T> area) where T : unmanaged
    {
        if (area.IsNull)
            return;
        PerCpuChunk chunk = FindChunk(area.Address, "free");
        int bit = (int)((area.Address - (nint)chunk.Base) / MinAllocSize);
        int bits;
        long charge;
        bool becameEmpty;
        _lock.Enter();
        try
        {
            string? problem = chunk.Dead ? "is not a live per-CPU area" : CheckStart(chunk, area.Address, bit);
            if (problem != null)
                throw Misuse(area.Address, "free", problem);
            // The charge record goes with the area, under the lock: once the granules are
            // free, the next owner may write its own (pcpu_memcg_free_hook runs here too).
            charge = chunk.TakeCharge(bit);
            bits = chunk.Free(bit);
            becameEmpty = chunk.IsEmpty && HasOtherEmptyChunk(chunk);
        }
        finally
        {
            _lock.Exit();
        }
        if (charge != 0)
            MemoryGroup.FromId(PerCpuChunk.ChargedGroup(charge)).Uncharge(PerCpuChunk.ChargedBytes(charge));
        Interlocked.Increment(ref _frees);
        Interlocked.Add(ref _bytesInUse, -(long)bits * MinAllocSize);
        if (becameEmpty && Interlocked.Exchange(ref _needBalance, 1) == 0)
            Kmem.Reclaim.Kick();
    }

    /// <summary>
    /// Charges a live area to the current <see cref="MemoryGroup"/> without reallocating it
    /// (the seed's <c>pcpu_charge</c>, patch 5): for objects that keep their per-CPU memory
    /// from a slab constructor to its destructor but are accounted per use. Takes no lock.
    /// </summary>
    /// <returns>False, with nothing charged, if that would pass a group's limit; true with no current group.</returns>
    /// <exception cref="SlabUsageException">Not a live area of this allocator, or already charged.</exception>
    public bool Charge<T>(PerCpuPtr<T> area) where T : unmanaged => Charge(area, MemoryGroup.Current);

    /// <summary>As <see cref="Charge{T}(PerCpuPtr{T})"/>, to <paramref name="group"/>.</summary>
    public bool Charge<T>(PerCpuPtr<T> area, MemoryGroup? group) where T : unmanaged =>
        ChargeIn(FindChunk(area.Address, "charge"), area.Address, group);

    /// <summary>Gives back the charge of a live area (pcpu_uncharge); nothing if it is not charged. Takes no lock.</summary>
    public void Uncharge<T>(PerCpuPtr<T> area) where T : unmanaged =>
        UnchargeIn(FindChunk(area.Address, "uncharge"), area.Address);

    /// <summary><see cref="Charge{T}(PerCpuPtr{T}, MemoryGroup?)"/> for an area whose allocator the caller does not know (per-CPU counters).</summary>
    internal static bool ChargeArea(nint address, MemoryGroup? group)
    {
        PerCpuChunk c = ChunkOrThrow(address, "charge");
        return c.Owner.ChargeIn(c, address, group);
    }

    /// <summary><see cref="Uncharge{T}"/> for an area whose allocator the caller does not know.</summary>
    internal static void UnchargeArea(nint address)
    {
        PerCpuChunk c = ChunkOrThrow(address, "uncharge");
        c.Owner.UnchargeIn(c, address);
    }

    private bool ChargeIn(PerCpuChunk chunk, nint address, MemoryGroup? group)
    {
        int bit = LiveBit(chunk, address, "charge");
        group = group?.Online();
        if (group == null || group == MemoryGroup.Root)
            return true;
        ref long record = ref chunk.ChargeRecord(bit);
        if (record != 0)
            throw Misuse(address, "charge", $"is already charged to memory group '{MemoryGroup.FromId(PerCpuChunk.ChargedGroup(record)).Name}'");
        long bytes = AreaBytes(chunk, bit);
        if (!group.TryCharge(bytes))
            return false;
        record = PerCpuChunk.PackCharge(group.Id, bytes);
        return true;
    }

    private void UnchargeIn(PerCpuChunk chunk, nint address)
    {
        long record = chunk.TakeCharge(LiveBit(chunk, address, "uncharge"));
        if (record != 0)
            MemoryGroup.FromId(PerCpuChunk.ChargedGroup(record)).Uncharge(PerCpuChunk.ChargedBytes(record));
    }

    /// <summary>The group a live area is charged to, or null.</summary>
    public MemoryGroup? ChargedTo<T>(PerCpuPtr<T> area) where T : unmanaged
    {
        PerCpuChunk chunk = FindChunk(area.Address, "look up");
        long record = chunk.ChargeRecord(LiveBit(chunk, area.Address, "look up"));
        return record == 0 ? null : MemoryGroup.FromId(PerCpuChunk.ChargedGroup(record));
    }

    /// <summary>Bytes per CPU of a live area (its size rounded up to the granule).</summary>
    public int SizeOf<T>(PerCpuPtr<T> area) where T : unmanaged
    {
        PerCpuChunk chunk = FindChunk(area.Address, "size");
        return chunk.LiveAreaBits(LiveBit(chunk, area.Address, "size")) * MinAllocSize;
    }

    private static long AreaBytes(PerCpuChunk chunk, int bit) => (long)chunk.LiveAreaBits(bit) * MinAllocSize * Units;

    /// <summary>The granule of a live area, checked without pcpu_lock (the caller owns the area).</summary>
    private int LiveBit(PerCpuChunk chunk, nint address, string operation)
    {
        int bit = (int)((address - (nint)chunk.Base) / MinAllocSize);
        string? problem = CheckStart(chunk, address, bit);
        if (problem != null)
            throw Misuse(address, operation, problem);
        return bit;
    }

    private static string? CheckStart(PerCpuChunk chunk, nint address, int bit) =>
        (address - (nint)chunk.Base) % MinAllocSize != 0 ? "points inside an area, not at its start" : chunk.CheckAreaStart(bit);

    private PerCpuChunk FindChunk(nint address, string operation)
    {
        PerCpuChunk chunk = ChunkOf(address) ?? throw Misuse(address, operation, "is not in CPU 0's unit of any per-CPU chunk");
        if (chunk.Owner != this)
            throw Misuse(address, operation, $"belongs to per-CPU allocator '{chunk.Owner.Name}'");
        return chunk;
    }

    private static PerCpuChunk ChunkOrThrow(nint address, string operation) =>
        ChunkOf(address) ?? throw new SlabUsageException(null, address,
            $"cannot {operation} per-CPU area 0x{address:x}: it is not in CPU 0's unit of any per-CPU chunk (freed already?)");

    /// <summary>The chunk holding <paramref name="address"/> in its CPU 0 unit, or null; takes no lock.</summary>
    private static PerCpuChunk? ChunkOf(nint address)
    {
        PerCpuChunk[] chunks = Volatile.Read(ref s_chunks);
        int i = FindInsertionIndex(chunks, address) - 1;
        return i >= 0 && chunks[i].Contains(address) ? chunks[i] : null;
    }

    /// <summary>The allocator that owns an area (null if none): frees that name no allocator use it.</summary>
    internal static PerCpuAllocator? OwnerOf(nint address) => ChunkOf(address)?.Owner;

    /// <summary>Index of the first chunk whose base is above <paramref name="address"/>.</summary>
    private static int FindInsertionIndex(PerCpuChunk[] chunks, nint address)
    {
        int lo = 0, hi = chunks.Length;
        while (lo < hi)
        {
            int mid = (lo + hi) >>> 1;
            if ((nint)chunks[mid].Base <= address)
                lo = mid + 1;
            else
                hi = mid;
        }
        return lo;
    }

    private SlabUsageException Misuse(nint address, string operation, string problem) =>
        new(Name, address, $"per-CPU allocator '{Name}': cannot {operation} 0x{address:x}: it {problem}");

    private bool HasOtherEmptyChunk(PerCpuChunk chunk)
    {
        foreach (PerCpuChunk c in _chunks)
        {
            if (c != chunk && c.IsEmpty)
                return true;
        }
        return false;
    }

    /// <summary>
    /// The balance work: returns every fully free chunk but one to the page layer. Takes
    /// pcpu_alloc_mutex. The reclaim thread runs it when a free has left two chunks empty.
    /// </summary>
    /// <returns>Chunks freed.</returns>
    public int Balance() => FreeEmptyChunks(keepEmpty: 1);

    private int FreeEmptyChunks(int keepEmpty)
    {
        Volatile.Write(ref _needBalance, 0);
        var dead = new List<PerCpuChunk>();
        _allocMutex.Enter();
        try
        {
            _lock.Enter();
            try
            {
                int kept = 0;
                for (int i = 0; i < _chunks.Count; i++)
                {
                    PerCpuChunk c = _chunks[i];
                    if (!c.IsEmpty || kept++ < keepEmpty)
                        continue;
                    c.Dead = true;
                    dead.Add(c);
                    _chunks.RemoveAt(i--);
                }
            }
            finally
            {
                _lock.Exit();
            }
            foreach (PerCpuChunk c in dead)
            {
                UpdateCopy(ref s_chunks, a => [.. a.Where(x => x != c)]);
                Pages.FreeBlock(c.Base, c.BlockSize);
            }
        }
        finally
        {
            _allocMutex.Exit();
        }
        Interlocked.Add(ref _chunksFreed, dead.Count);
        return dead.Count;
    }

    /// <summary>Reclaim thread: balance every allocator whose frees asked for it.</summary>
    internal static void BalanceWhereNeeded()
    {
        foreach (PerCpuAllocator a in Volatile.Read(ref s_live))
        {
            if (Volatile.Read(ref a._needBalance) != 0 && !a._disposed)
                a.Balance();
        }
    }

    /// <summary>
    /// A snapshot of the allocator's chunks, areas, bytes and lock figures. Takes the area
    /// lock (a leaf) for a moment, so it may be called from a destructor; safe from any thread.
    /// </summary>
    public PerCpuStatistics GetStatistics()
    {
        int chunks, empty, areas;
        _lock.Enter();
        try
        {
            chunks = _chunks.Count;
            empty = _chunks.Count(c => c.IsEmpty);
            areas = _chunks.Sum(c => c.Areas);
        }
        finally
        {
            _lock.Exit();
        }
        return new PerCpuStatistics(
            chunks, empty, areas,
            Volatile.Read(ref _bytesInUse),
            (long)chunks * (long)ChunkBytes,
            Volatile.Read(ref _allocations),
            Volatile.Read(ref _frees),
            Volatile.Read(ref _failedAllocations),
            Volatile.Read(ref _chunksCreated),
            Volatile.Read(ref _chunksFreed),
            _allocMutex.GetStatistics(),
            _lock.GetStatistics());
    }

    /// <summary>Frees every chunk; the shared allocator cannot be disposed.</summary>
    /// <exception cref="SlabUsageException">Areas are still live (the count is in the message); nothing is freed.</exception>
    public void Dispose()
    {
        if (s_shared.IsValueCreated && this == s_shared.Value)
            throw new InvalidOperationException("the shared per-CPU allocator cannot be disposed");
        if (_disposed)
            return;
        _lock.Enter();
        int live;
        try
        {
            live = _chunks.Sum(c => c.Areas);
        }
        finally
        {
            _lock.Exit();
        }
        if (live > 0)
            throw new SlabUsageException(Name, 0, $"per-CPU allocator '{Name}': {live} areas are still allocated") { LiveObjects = live };
        _disposed = true;
        FreeEmptyChunks(keepEmpty: 0);
        UpdateCopy(ref s_live, a => [.. a.Where(x => x != this)]);
    }

    /// <summary>Copy-on-write update of a shared array without a lock (readers take no lock either).</summary>
    private static void UpdateCopy<TItem>(ref TItem[] location, Func<TItem[], TItem[]> change) where TItem : class
    {
        while (true)
        {
            TItem[] old = Volatile.Read(ref location);
            if (Interlocked.CompareExchange(ref location, change(old), old) == old)
                return;
        }
    }

    /// <summary>Alignment for an element of <paramref name="size"/> bytes: its largest power-of-two divisor, 4 to 64.</summary>
    private static int NaturalAlign(int size) => Math.Clamp(1 << BitOperations.TrailingZeroCount(size), MinAllocSize, 64);
}
