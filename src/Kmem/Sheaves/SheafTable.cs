using System.Diagnostics;
using Kmem.Locking;

namespace Kmem.Sheaves;

/// <summary>
/// A cache's per-thread sheaves, indexed by <see cref="ThreadSlot"/> id, and the drainer's
/// side of the handshake (<see cref="Sheaf"/>): <see cref="BeginDrain"/>,
/// <see cref="WaitIdle"/>, <see cref="EndDrain"/>, and <see cref="Kill"/> for Dispose.
/// </summary>
/// <remarks>
/// The fast path reads the table array straight from its cache handle (one load, no
/// hop through this object); the table publishes each new array to every handle it has
/// (<see cref="AddReader"/>). Slot 0 is always null: an unregistered thread falls into
/// the slow path with no test of its own.
/// <para>Locking: <see cref="_lock"/> (class sheaf_table, a leaf) guards
/// <see cref="_sheaves"/>, <see cref="_readers"/> and <see cref="_dead"/>; a sheaf is
/// created in place in the current array under it, which is why a drainer works on a
/// <see cref="BeginDrain"/> snapshot taken under it and never on the live array.
/// Drainers hold the cache's sheaf_drain, so there is one at a time.</para>
/// </remarks>
internal sealed unsafe class SheafTable
{
    private readonly int _capacity;
    private readonly LeafSpinLock _lock = new("sheaf_table");

    // ---- sheaf_table ----
    /// <summary>Replaced, never shrunk, when it grows; an empty array once dead.</summary>
    private Sheaf*[] _sheaves = new Sheaf*[1];
    /// <summary>Handles whose fast path reads <see cref="_sheaves"/>; each gets every new array.</summary>
    private readonly List<Action<Sheaf*[]>> _readers = [];
    private bool _dead;

    public SheafTable(int capacity) => _capacity = capacity;

    public LeafSpinLock Lock => _lock;

    /// <summary>Objects a sheaf holds.</summary>
    public int Capacity => _capacity;

    /// <summary>Publishes the table to <paramref name="reader"/> now and on every change.</summary>
    public void AddReader(Action<Sheaf*[]> reader)
    {
        using (_lock.Scope())
        {
            _readers.Add(reader);
            reader(_sheaves);
        }
    }

    /// <summary>Stops publishing to <paramref name="reader"/> and gives it an empty table (its fast path then always misses).</summary>
    public void RemoveReader(Action<Sheaf*[]> reader)
    {
        using (_lock.Scope())
        {
            _readers.Remove(reader);
            reader(new Sheaf*[1]);
        }
    }

    /// <summary>The calling thread's sheaf, created on first use; null once the table is dead.</summary>
    public Sheaf* OfCurrentThread()
    {
        int id = ThreadSlot.Register();
        Sheaf*[] table = Volatile.Read(ref _sheaves);
        if (id < table.Length && table[id] != null)
            return table[id];
        using (_lock.Scope())
        {
            if (_dead)
                return null;
            table = _sheaves;
            if (id >= table.Length)
            {
                var grown = new Sheaf*[Math.Max(id + 1, Math.Max(ThreadSlot.MaxId + 1, table.Length * 2))];
                table.CopyTo(grown, 0);
                table = grown;
            }
            if (table[id] == null)
                table[id] = Sheaf.Create(_capacity);
            Publish(table);
            return table[id];
        }
    }

    /// <summary>Racy sum of the objects parked in sheaves (for statistics).</summary>
    public long CachedObjects()
    {
        long cached = 0;
        using (_lock.Scope())
        {
            foreach (Sheaf* s in _sheaves)
            {
                if (s != null)
                    cached += Volatile.Read(ref s->Count);
            }
        }
        return cached;
    }

    /// <summary>Tests: the objects in the sheaf of thread id <paramref name="id"/> now (0 if it has none).</summary>
    public int CountAt(int id)
    {
        using (_lock.Scope())
            return id < _sheaves.Length && _sheaves[id] != null ? Volatile.Read(ref _sheaves[id]->Count) : 0;
    }

    /// <summary>
    /// D1 and D2: asks every sheaf existing now to stop and runs the process-wide barrier.
    /// Returns the sheaves asked, with their slot ids; the caller goes through each with
    /// <see cref="WaitIdle"/>, empties it, and ends with <see cref="EndDrain"/> (or, when
    /// <paramref name="kill"/>, with <see cref="Kill"/>). A sheaf created after the
    /// snapshot is not asked and not drained: it was empty then. With
    /// <paramref name="kill"/> (Dispose) no sheaf is created after it, and the sheaves are
    /// marked dead instead of draining. Caller holds sheaf_drain.
    /// </summary>
    /// <param name="kill">Dispose: mark the sheaves dead and the table with them.</param>
    /// <param name="only">When given, only the sheaves of these ids (exited threads' ones, for the reclaim thread).</param>
    public List<(int Id, nint Sheaf)> BeginDrain(bool kill, HashSet<int>? only = null)
    {
        Debug.Assert(!(kill && only != null), "Dispose drains every sheaf");
        var asked = new List<(int, nint)>();
        int state = kill ? Sheaf.StateDead : Sheaf.StateDraining;
        using (_lock.Scope())
        {
            if (kill)
                _dead = true;
            Sheaf*[] table = _sheaves;
            for (int id = 1; id < table.Length; id++)
            {
                Sheaf* s = table[id];
                if (s == null || (only != null && !only.Contains(id)))
                    continue;
                Volatile.Write(ref s->State, state);   // D1
                asked.Add((id, (nint)s));
            }
        }
        // D2: every owner's O1 that this barrier does not make visible to WaitIdle comes
        // after it, and so does that owner's O2, which then reads D1 and backs off.
        if (asked.Count > 0)
            Interlocked.MemoryBarrierProcessWide();
        return asked;
    }

    /// <summary>D3: waits until the owner is outside its sheaf; the objects are the drainer's after.</summary>
    public static void WaitIdle(Sheaf* s)
    {
        var wait = new SpinWait();
        while (Volatile.Read(ref s->Busy) != 0)
            wait.SpinOnce();
    }

    /// <summary>D5: hands an emptied sheaf back to its owner (release: Count = 0 is visible first).</summary>
    public static void EndDrain(Sheaf* s)
    {
        Debug.Assert(s->Count == 0, "sheaf handed back with objects");
        Volatile.Write(ref s->State, Sheaf.StateOpen);
    }

    /// <summary>
    /// Dispose: after a <see cref="BeginDrain"/>(kill: true) whose sheaves were emptied, publishes an empty table (every later call takes the slow
    /// path, which reports the disposal) and retires the sheaves to their owners'
    /// <see cref="ThreadSlot"/>, which free them. They are not freed here: an owner may
    /// have read a sheaf's address just before the new table was published, and will still
    /// store Busy into it (then read Dead and back off). Only the owner knows when it is no
    /// longer between those two accesses: in any slow path of its own, or once dead.
    /// </summary>
    public void Kill(List<(int Id, nint Sheaf)> killed)
    {
        using (_lock.Scope())
        {
            Debug.Assert(_dead, "Kill without BeginDrain(kill: true)");
            Publish(new Sheaf*[1]);
            _readers.Clear();
        }
        foreach ((int id, nint s) in killed)
            ThreadSlot.Retire(id, (Sheaf*)s);
    }

    /// <summary>Caller holds sheaf_table.</summary>
    private void Publish(Sheaf*[] table)
    {
        Volatile.Write(ref _sheaves, table);
        foreach (Action<Sheaf*[]> reader in _readers)
            reader(table);
    }
}
