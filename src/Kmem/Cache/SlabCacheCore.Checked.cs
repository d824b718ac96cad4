using System.Diagnostics;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// <see cref="SlabFlags.ConsistencyChecks"/>: every allocation and free goes straight
/// to the slab under list_lock, where the allocation bitmap every slab has sees each
/// object, so every double free is caught and thrown at its caller, and a corrupted
/// free list is repaired before anything is handed out (as in every cache).
/// </summary>
internal sealed unsafe partial class SlabCacheCore
{
    private void* CheckedAlloc(bool throwOnFailure)
    {
        bool waited = false;
        while (true)
        {
            void* o = null;
            int got;
            using (_listLock.Scope())
            {
                if (_disposed)
                    ThrowDisposed(null);
                got = TakeFromPartial(&o, 1);
            }
            FlushReports();
            if (got == 1)
                return o;
            if (!Grow(ref waited, throwOnFailure, out void* failed))
                return failed;
        }
    }

    private void CheckedFree(void* obj, SlabHeader* slab)
    {
        SlabHeader* release = null;
        bool excess;
        int doubleFrees;
        using (_listLock.Scope())
        {
            if (_disposed)
                ThrowDisposed(obj);
            excess = ReturnToSlabs(&obj, 1, ref release, out doubleFrees, report: false);
        }
        if (doubleFrees != 0)
            ThrowDoubleFree(obj, "it is already free");
        AfterReturn(release, excess);
    }

    /// <summary>
    /// Up to <paramref name="max"/> addresses of objects off their slab's free list (after a
    /// drain: the live ones), read from the bitmaps, in list order. Caller holds list_lock.
    /// </summary>
    private List<nint> LiveObjects(int max)
    {
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        var live = new List<nint>();
        for (int list = 0; list < 2; list++)
        {
            for (SlabHeader* slab = list == 0 ? _full : _partial; slab != null && live.Count < max; slab = slab->Next)
            {
                ulong* bitmap = BitmapOf(slab);
                byte* first = (byte*)slab + _layout.ObjectOffset;
                for (int i = 0; i < _layout.Objects && live.Count < max; i++)
                {
                    if ((bitmap[i >> 6] & (1UL << i)) != 0)
                        live.Add((nint)(first + i * _layout.Stride));
                }
            }
        }
        return live;
    }
}
