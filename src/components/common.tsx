import type { LabIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { breakableParts } from '../format';

/**
 * A labelled bar with its text.
 */
export function Meter(props: {
  className: string;
  label: string;
  value: number | null;
  text: string;
}): JSX.Element {
  const level =
    props.value === null
      ? 'unknown'
      : props.value >= 0.9
        ? 'high'
        : props.value >= 0.7
          ? 'medium'
          : 'low';
  return (
    <div
      className={`jp-tfenv-meter ${props.className}`}
      data-tfenv-level={level}
    >
      <div className="jp-tfenv-line">
        <span className="jp-tfenv-line-label">{props.label}</span>
        <span className="jp-tfenv-meter-text">{props.text}</span>
      </div>
      <div
        className="jp-tfenv-bar"
        role="meter"
        aria-label={props.label}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={
          props.value === null ? undefined : Math.round(props.value * 100)
        }
      >
        <div
          className="jp-tfenv-bar-fill"
          style={{ width: `${Math.round((props.value ?? 0) * 100)}%` }}
        />
      </div>
    </div>
  );
}

export function IconButton(props: {
  className: string;
  icon: LabIcon;
  title: string;
  onClick: () => void;
}): JSX.Element {
  return (
    <button
      className={`jp-tfenv-icon-button ${props.className}`}
      title={props.title}
      aria-label={props.title}
      onClick={props.onClick}
    >
      <props.icon.react tag="span" elementSize="normal" />
    </button>
  );
}

/**
 * A long value (image reference, path, code) that wraps at its separators in
 * a narrow sidebar instead of being cut off or broken inside a word; its text
 * is the value unchanged.
 */
export function Breakable(props: { text: string }): JSX.Element {
  return (
    <>
      {breakableParts(props.text).map((part, i) => (
        <React.Fragment key={i}>
          {i > 0 && <wbr />}
          {part}
        </React.Fragment>
      ))}
    </>
  );
}
