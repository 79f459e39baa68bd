// spam.js — the /spam history page: the reclassify buttons (spam rows "Not
// spam", ham rows "Spam", unsure rows both). The page itself
// is rendered by the server (src/http/spam_page.cpp); this only posts
// {"signature", "as"} to /spam/reclassify and updates the row in place.
'use strict';

function setStatus(text, isError) {
  const status = document.getElementById('status');
  status.textContent = text;
  status.className = isError ? 'error' : '';
}

async function reclassify(button) {
  const row = button.closest('tr');
  const signature = row.dataset.signature;
  const as = button.dataset.as;
  button.disabled = true;
  try {
    const response = await fetch('/spam/reclassify', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ signature, as }),
      credentials: 'same-origin',
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      setStatus(`Could not reclassify ${signature}: ${body.description || response.status}`, true);
      return;
    }
    // The label stays what the operator said: one button, to undo it (an unsure row had two).
    row.className = as;
    row.querySelector('.verdict').textContent = `${as} (reclassified)`;
    for (const other of row.querySelectorAll('button.reclassify')) if (other !== button) other.remove();
    button.dataset.as = as === 'spam' ? 'ham' : 'spam';
    button.textContent = as === 'spam' ? 'Not spam' : 'Spam';
    setStatus(`${signature} learned as ${as} (score ${body.score_before.toFixed(3)} → ${body.score_after.toFixed(3)}).`, false);
  } catch (e) {
    setStatus(`Could not reclassify ${signature}: ${e.message}`, true);
  } finally {
    button.disabled = false;
  }
}

document.addEventListener('click', (event) => {
  const button = event.target.closest('button.reclassify');
  if (button) reclassify(button);
});
