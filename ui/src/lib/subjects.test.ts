import { describe, expect, it } from "vitest";
import { ApiError, type Subject } from "../api";
import { KeySession } from "./auth";
import { KnownSubjects, TRUNCATED_NOTICE, lookupMiss, offeredSubjects, readSubjectId } from "./subjects";

const subject = (id: string, faces = 0): Subject => ({ id, name: `name of ${id}`, faces });
const ids = (list: readonly Subject[] | undefined) => list?.map((s) => s.id);

describe("offeredSubjects", () => {
  const listed = [subject("a"), subject("b")];

  it("a complete listing is offered as it is: a remembered subject missing from it was deleted", () => {
    expect(ids(offeredSubjects(listed, false, [subject("new")]))).toEqual(["a", "b"]);
  });

  it("a cut-off listing also offers the remembered subjects it left out, first", () => {
    const known = [subject("new"), subject("b", 3), subject("found")];
    const offered = offeredSubjects(listed, true, known);
    expect(ids(offered)).toEqual(["new", "found", "a", "b"]);
    // A listed subject keeps its listed state.
    expect(offered?.find((s) => s.id === "b")?.faces).toBe(0);
  });

  it("is undefined while the listing loads", () => {
    expect(offeredSubjects(undefined, true, [subject("new")])).toBeUndefined();
  });
});

describe("KnownSubjects", () => {
  it("remembers a created subject, so a cut-off list offers it", () => {
    const known = new KnownSubjects();
    let changes = 0;
    known.subscribe(() => changes++);
    const listed = Array.from({ length: 3 }, (_, i) => subject(`old${i}`));
    expect(ids(offeredSubjects(listed, true, known.snapshot()))).toEqual(["old0", "old1", "old2"]);
    known.remember(subject("created"));
    expect(changes).toBe(1);
    expect(ids(offeredSubjects(listed, true, known.snapshot()))).toEqual(["created", "old0", "old1", "old2"]);
  });

  it("keeps the newest first, updates face counts in place and forgets deleted subjects", () => {
    const known = new KnownSubjects();
    known.remember(subject("a"));
    known.remember(subject("b"));
    known.remember(subject("a", 1));
    expect(known.snapshot()).toEqual([subject("a", 1), subject("b")]);
    const before = known.snapshot();
    known.patch("b", { faces: 2 });
    expect(known.snapshot()).toEqual([subject("a", 1), subject("b", 2)]);
    expect(known.snapshot()).not.toBe(before);
    const unchanged = known.snapshot();
    known.patch("missing", { faces: 9 });
    known.forget("missing");
    expect(known.snapshot()).toBe(unchanged);
    known.forget("a");
    expect(ids(known.snapshot())).toEqual(["b"]);
  });

  it("forgets everything when the key changes (sign out, another key)", () => {
    const session = new KeySession(undefined);
    session.set("fk_one");
    const known = new KnownSubjects(session);
    known.remember(subject("a"));
    session.set("fk_one"); // the same key again: nothing to forget
    expect(ids(known.snapshot())).toEqual(["a"]);
    session.clear();
    expect(known.snapshot()).toEqual([]);
    known.remember(subject("b"));
    session.set("fk_other");
    expect(known.snapshot()).toEqual([]);
  });
});

describe("looking a subject up by id", () => {
  const id = "3f0c2a1e-8b4d-4c1a-9e2f-5a6b7c8d9e0f";

  it("reads the typed id as the API expects it, or says what is wrong", () => {
    expect(readSubjectId(` ${id.toUpperCase()} `)).toEqual({ ok: true, id });
    expect(readSubjectId("  ")).toEqual({ ok: false, problem: "Enter the subject's id." });
    const bad = readSubjectId("Eileen Collins");
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.problem).toContain("is a UUID");
  });

  it("says plainly when no subject has the id; other failures are errors", () => {
    expect(lookupMiss(new ApiError(404, "subject_not_found", "no subject"), id)).toBe(`No subject has the id ${id}.`);
    expect(lookupMiss(new ApiError(403, "forbidden", "needs admin"), id)).toBeUndefined();
    expect(lookupMiss(new Error("boom"), id)).toBeUndefined();
  });

  it("the notice names how many are listed and how to reach the others", () => {
    expect(TRUNCATED_NOTICE).toContain("Showing the first 10,000 subjects");
    expect(TRUNCATED_NOTICE).toContain("enter its id");
  });
});
