// Live captions panel. `conclave.captions` keeps {participant_id, name, text, final, end_ms,
// received_at} entries,
// oldest first; an interim entry changes in place until it turns final.
//
// Final lines go into the aria-live list; interims sit in a separate aria-hidden list, so a
// screen reader reads each utterance once, when it is final, not every guess before that.

const MAX_CAPTIONS = 200;
const MAX_CAPTION_LINES = 50; // kept in the page; the panel shows about six
// The server sends no final for an utterance it decides was not speech, so an interim
// caption left without updates this long is taken away instead of staying for ever.
const STALE_INTERIM_MS = 10000;

/** conclave: the call state. ui: captions, captionLines, captionInterim (the first may be absent). */
export function createCaptions({ conclave, ui }) {
  const interimCaptions = new Map(); // participant id -> {entry, el, timer} of the utterance in progress

  function onCaption(msg) {
    const pid = msg.participant_id;
    if (!ui.captions || !pid) return;
    const text = (msg.text || '').trim();
    const isFinal = Boolean(msg.final);
    // An utterance that turned out to be nothing (noise) leaves no line.
    if (!text) return isFinal ? dropInterim(pid) : undefined;
    const box = ui.captions;
    // Stay on the newest line unless the reader scrolled back.
    const follow = box.hidden || box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    // Counted per speaker name, so tests can see interims arrived while someone talked.
    if (!isFinal) {
      const who = msg.name || pid;
      conclave.interimCounts = conclave.interimCounts || {};
      conclave.interimCounts[who] = (conclave.interimCounts[who] || 0) + 1;
    }
    let current = interimCaptions.get(pid);
    if (!current) {
      current = { entry: { participant_id: pid }, el: null, timer: null };
      conclave.captions.push(current.entry);
      if (conclave.captions.length > MAX_CAPTIONS) conclave.captions.shift();
    }
    clearTimeout(current.timer);
    const name = msg.name || conclave.participants.get(pid)?.name || 'Someone';
    // end_ms (room clock) and the arrival time let tests measure speech end -> caption.
    Object.assign(current.entry, { name, text, final: isFinal, end_ms: msg.end_ms, received_at: Date.now() });
    const line = captionLine(current.entry);
    if (isFinal) {
      interimCaptions.delete(pid);
      if (current.el) current.el.remove();
      ui.captionLines.append(line);
      if (ui.captionLines.children.length > MAX_CAPTION_LINES) ui.captionLines.firstElementChild.remove();
    } else {
      if (current.el) current.el.replaceWith(line);
      else ui.captionInterim.append(line);
      current.el = line;
      current.timer = setTimeout(() => dropInterim(pid), STALE_INTERIM_MS);
      interimCaptions.set(pid, current);
    }
    box.hidden = false;
    if (follow) box.scrollTop = box.scrollHeight;
  }

  /** Forgets the utterance `pid` has in progress, if any (it came to nothing, or they left). */
  function dropInterim(pid) {
    const current = interimCaptions.get(pid);
    if (!current) return;
    interimCaptions.delete(pid);
    clearTimeout(current.timer);
    if (current.el) current.el.remove();
    const i = conclave.captions.indexOf(current.entry);
    if (i >= 0) conclave.captions.splice(i, 1);
    if (ui.captions) ui.captions.hidden = !ui.captionLines.children.length && !ui.captionInterim.children.length;
  }

  function captionLine(entry) {
    const line = document.createElement('li');
    line.className = entry.final ? 'caption' : 'caption interim';
    line.dataset.participantId = entry.participant_id;
    const who = document.createElement('span');
    who.className = 'caption-name';
    who.textContent = `${entry.name}: `;
    line.append(who, entry.text);
    return line;
  }

  return { onCaption, dropInterim };
}
