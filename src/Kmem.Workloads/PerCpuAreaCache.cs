using System.Numerics;
using System.Runtime.InteropServices;
using Kmem.Locking;

namespace Kmem.Workloads;

/// <summary>
/// The thread's alternative to slab destructors: a per-CPU allocator with object caching
/// of its own (Tejun Heo: "a simplified version of sl*b serving power of two sizes"),
/// filled in batches carved from one large per-CPU area (Christoph Lameter: "allocate
/// larger percpu areas for a batch of them and then assign as needed").
/// </summary>
/// <remarks>
/// Each CPU keeps a stack of free areas per size class under its own leaf lock
/// (<c>pcpu_cache_cpu</c>); a stack that runs dry or over refills from, or flushes to,
/// one depot under <c>pcpu_cache_depot</c>, which takes pcpu_alloc_mutex only to carve a
/// new batch of <see cref="BatchAreas"/> areas. An area is zeroed on every CPU at each
/// allocation, as alloc_percpu promises: the price of caching below the object rather
/// than in it. Areas go back to the per-CPU allocator only at <see cref="Dispose"/>.
/// </remarks>
public sealed unsafe class PerCpuAreaCache : IDisposable
{
    public const int BatchAreas = 64;
    private const int MinClassShift = 3;   // 8 B
    private const int Classes = 10;        // 8 B .. 4 KiB
    private const int CpuStack = 32;

    private readonly PerCpuAllocator _allocator;
    private readonly KLock _depotLock = new("pcpu_cache_depot");
    private readonly Stack<PerCpuPtr<byte>>[] _depot = [.. Enumerable.Range(0, Classes).Select(_ => new Stack<PerCpuPtr<byte>>())];
    private readonly List<PerCpuPtr<byte>> _batches = [];
    private readonly CpuCache[] _cpus = [.. Enumerable.Range(0, CpuTopology.PossibleCpus).Select(_ => new CpuCache())];

    private sealed class CpuCache
    {
        public readonly LeafSpinLock Lock = new("pcpu_cache_cpu");
        public readonly PerCpuPtr<byte>[][] Free = [.. Enumerable.Range(0, Classes).Select(_ => new PerCpuPtr<byte>[CpuStack])];
        public readonly int[] Count = new int[Classes];
    }

    public PerCpuAreaCache(PerCpuAllocator allocator) => _allocator = allocator;

    /// <summary>The depot lock and the per-CPU locks (summed), for the demo's lock table.</summary>
    public IEnumerable<LockStatistics> GetLockStatistics()
    {
        yield return _depotLock.GetStatistics();
        LockStatistics cpu = _cpus[0].Lock.GetStatistics();
        foreach (CpuCache c in _cpus.Skip(1))
            cpu = cpu.Add(c.Lock.GetStatistics());
        yield return cpu;
    }

    private static int ClassOf(int size) => Math.Max(0, BitOperations.Log2((uint)Math.Max(size, 2) - 1) + 1 - MinClassShift);

    private static int ClassBytes(int cls) => 1 << (cls + MinClassShift);

    /// <summary>An area for <paramref name="count"/> <typeparamref name="T"/> per CPU, zeroed on every CPU.</summary>
    public PerCpuPtr<T> Alloc<T>(int count = 1) where T : unmanaged
    {
        int cls = ClassOf(sizeof(T) * count);
        if (cls >= Classes)
            throw new ArgumentOutOfRangeException(nameof(count), "area larger than the biggest size class");
        CpuCache cpu = _cpus[CpuTopology.CurrentCpu];
        PerCpuPtr<byte> area = default;
        cpu.Lock.Enter();
        if (cpu.Count[cls] > 0)
            area = cpu.Free[cls][--cpu.Count[cls]];
        cpu.Lock.Exit();
        if (area.IsNull)
            area = Refill(cpu, cls);
        foreach (ref byte copy in area)
            NativeMemory.Clear(System.Runtime.CompilerServices.Unsafe.AsPointer(ref copy), (nuint)ClassBytes(cls));
        return area.Cast<T>();
    }

    /// <summary>Gives an area back to this CPU's stack (half the stack to the depot when full).</summary>
    public void Free<T>(PerCpuPtr<T> p, int count = 1) where T : unmanaged
    {
        int cls = ClassOf(sizeof(T) * count);
        CpuCache cpu = _cpus[CpuTopology.CurrentCpu];
        PerCpuPtr<byte>[]? moving = null;
        cpu.Lock.Enter();
        if (cpu.Count[cls] == CpuStack)
        {
            moving = new PerCpuPtr<byte>[CpuStack / 2];
            for (int i = 0; i < moving.Length; i++)
                moving[i] = cpu.Free[cls][--cpu.Count[cls]];
        }
        cpu.Free[cls][cpu.Count[cls]++] = p.Cast<byte>();
        cpu.Lock.Exit();
        if (moving != null)
            ToDepot(cls, moving);
    }

    private void ToDepot(int cls, IEnumerable<PerCpuPtr<byte>> areas)
    {
        using (_depotLock.Scope())
        {
            foreach (PerCpuPtr<byte> a in areas)
                _depot[cls].Push(a);
        }
    }

    /// <summary>Half a stack from the depot (carving a new batch if it runs dry): one area to use, the rest parked on this CPU.</summary>
    private PerCpuPtr<byte> Refill(CpuCache cpu, int cls)
    {
        var taken = new PerCpuPtr<byte>[CpuStack / 2];
        using (_depotLock.Scope())
        {
            if (_depot[cls].Count < taken.Length)
            {
                int bytes = ClassBytes(cls);
                PerCpuPtr<byte> batch = _allocator.Alloc(bytes * BatchAreas, Math.Min(bytes, 64));
                _batches.Add(batch);
                for (int i = BatchAreas - 1; i >= 0; i--)
                    _depot[cls].Push(batch.Offset(i * bytes));
            }
            for (int i = 0; i < taken.Length; i++)
                taken[i] = _depot[cls].Pop();
        }
        int parked = 1;
        cpu.Lock.Enter();
        while (parked < taken.Length && cpu.Count[cls] < CpuStack)
            cpu.Free[cls][cpu.Count[cls]++] = taken[parked++];
        cpu.Lock.Exit();
        if (parked < taken.Length)   // another thread on this CPU filled the stack meanwhile
            ToDepot(cls, taken[parked..]);
        return taken[0];
    }

    /// <summary>Returns every batch to the per-CPU allocator; no area may be in use.</summary>
    public void Dispose()
    {
        foreach (PerCpuPtr<byte> b in _batches)
            _allocator.Free(b);
        _batches.Clear();
    }
}
