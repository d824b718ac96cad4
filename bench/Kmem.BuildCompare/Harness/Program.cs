using System.Diagnostics;
using System.Runtime.CompilerServices;
using Kmem;

public static unsafe class Loop
{
    private static readonly SlabCache s_cache = SlabCache.Create("fph-64", 64, new SlabCacheOptions { Flags = SlabFlags.NoMerge });
    private static readonly nint[] s_held = new nint[1024];

    public static double Run(string mode, long n)
    {
        var sw = Stopwatch.StartNew();
        switch (mode)
        {
            case "slab": Slab(n); break;
            case "kmalloc": Kmalloc64(n); break;
            case "batch": Batch(n); break;
            case "klock": KLockPair(n); break;
        }
        return sw.Elapsed.TotalNanoseconds / n;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Slab(long n)
    {
        SlabCache cache = s_cache;
        for (long i = 0; i < n; i++) cache.Free(cache.Alloc());
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Kmalloc64(long n)
    {
        for (long i = 0; i < n; i++) Kmalloc.Free(Kmalloc.Alloc(64));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Batch(long n)
    {
        SlabCache cache = s_cache;
        nint[] held = s_held;
        for (long i = 0; i < n / 1024; i++)
        {
            for (int j = 0; j < 1024; j++) held[j] = (nint)cache.Alloc();
            for (int j = 0; j < 1024; j++) cache.Free((void*)held[j]);
        }
    }

    private static readonly Kmem.Locking.KLock s_lock = new("fph-lock");

    /// <summary>An uncontended KLock Enter+Exit: the slow paths' lock cost, validator off (Release).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void KLockPair(long n)
    {
        Kmem.Locking.KLock l = s_lock;
        for (long i = 0; i < n; i++)
        {
            l.Enter();
            l.Exit();
        }
    }

    public static void Main() { }
}
