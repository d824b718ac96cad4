using System.Runtime.CompilerServices;

namespace Kmem.Sheaves;

/// <summary>
/// The owner's fast paths over a sheaf table and its busy test, shared by a cache's core and its handles
/// (each reads the table from a field of its own, so a call pays no hop between them).
/// They must not take a lock, use an atomic, allocate, or call anything; on any doubt
/// they fail, for the slow path. What they cost: the TLS slot id, the table's length and
/// slot, the sheaf's Busy store and State load (<see cref="Sheaf.TryEnter"/>), Count, one
/// object slot, two stores.
/// </summary>
internal static unsafe class SheafFastPath
{
    /// <summary>Pops from the calling thread's sheaf; null when it has none, it is empty, or a drain is on.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void* TryPop(Sheaf*[] table)
    {
        uint id = (uint)ThreadSlot.Id;
        if (id < (uint)table.Length)
        {
            Sheaf* s = table[id];
            if (s != null && Sheaf.TryEnter(s))
            {
                // Count is read after TryEnter's acquire load of State, never before.
                int n = s->Count - 1;
                if (n >= 0)
                {
                    void* p = Sheaf.Objects(s)[n];
                    s->Count = n;
                    Sheaf.Exit(s);
                    return p;
                }
                Sheaf.Exit(s);
            }
        }
        return null;
    }

    /// <summary>
    /// Pushes onto the calling thread's sheaf; false when it has none, it is full, a drain
    /// is on, or <paramref name="obj"/> is on top already (a double free).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryPush(Sheaf*[] table, void* obj)
    {
        uint id = (uint)ThreadSlot.Id;
        if (id < (uint)table.Length)
        {
            Sheaf* s = table[id];
            if (s != null && Sheaf.TryEnter(s))
            {
                int n = s->Count;
                void** objects = Sheaf.Objects(s);
                // objects[-1] is the sheaf's null sentinel: the naive double-free check
                // (SLUB's "object is on top of the freelist") costs one load and no branch on n.
                if (n < s->Capacity && objects[n - 1] != obj)
                {
                    objects[n] = obj;
                    s->Count = n + 1;
                    Sheaf.Exit(s);
                    return true;
                }
                Sheaf.Exit(s);
            }
        }
        return false;
    }

    /// <summary>
    /// The busy test (seed 003's local_lock_is_locked): the calling thread's sheaf is Busy,
    /// so this call re-entered the allocator from inside that cache's fast or slow path. A
    /// sheaf is Busy only for its own thread, so no other thread can make this true. The
    /// fast paths must then not run: they would set and clear Busy under the outer frame.
    /// </summary>
    public static bool IsBusy(Sheaf*[] table)
    {
        uint id = (uint)ThreadSlot.Id;
        return id < (uint)table.Length && table[id] != null && table[id]->Busy != 0;
    }
}
